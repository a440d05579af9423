"""Unit tests for bot.originals: keeping, reading and pruning the lossless result files."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from bot.originals import Originals


async def test_save_and_load_round_trip(tmp_path: Path) -> None:
    originals = Originals(tmp_path / "originals")
    files = [("image-1.png", b"\x89PNG one"), ("image-2.webp", b"RIFF two")]
    await originals.save("abc_DEF-12", files)
    assert await originals.load("abc_DEF-12") == files


async def test_order_is_kept_past_ten_files(tmp_path: Path) -> None:
    originals = Originals(tmp_path)
    files = [(f"image-{i}.png", bytes([i])) for i in range(1, 13)]
    await originals.save("many", files)
    assert await originals.load("many") == files


async def test_names_cannot_escape_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "originals"
    originals = Originals(root)
    await originals.save("r1", [("../../evil.png", b"x")])
    assert not (tmp_path / "evil.png").exists()
    assert await originals.load("r1") == [("evil.png", b"x")]


async def test_unknown_result_loads_empty(tmp_path: Path) -> None:
    originals = Originals(tmp_path / "originals")
    assert await originals.load("nothing") == []
    await originals.save("other", [("a.png", b"a")])
    assert await originals.load("nothing") == []


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "x" * 33, "é", ".", ".."])
async def test_bad_ids_are_refused_quietly(tmp_path: Path, bad: str, caplog) -> None:
    root = tmp_path / "originals"
    originals = Originals(root)
    with caplog.at_level(logging.WARNING, logger="bot.originals"):
        await originals.save(bad, [("a.png", b"a")])
        assert await originals.load(bad) == []
    assert not root.exists() or list(root.iterdir()) == []
    assert not (tmp_path / "etc").exists()
    assert "could not" in caplog.text


async def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    originals = Originals(tmp_path, keep=3)
    for i in range(6):
        await originals.save(f"r{i}", [("a.png", bytes([i]))])
        # Distinct, increasing modification times even on coarse-clock file systems.
        stamp = time.time_ns() - (10 - i) * 1_000_000_000
        os.utime(tmp_path / f"r{i}", ns=(stamp, stamp))
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["r3", "r4", "r5"]
    assert await originals.load("r0") == []
    assert await originals.load("r5") == [("a.png", bytes([5]))]


async def test_prune_never_removes_the_result_just_saved(tmp_path: Path) -> None:
    originals = Originals(tmp_path, keep=2)
    for name in ("old1", "old2"):
        await originals.save(name, [("a.png", b"a")])
        future = time.time_ns() + 3600 * 1_000_000_000  # the clock went back since
        os.utime(tmp_path / name, ns=(future, future))
    await originals.save("fresh", [("a.png", b"fresh")])
    assert await originals.load("fresh") == [("a.png", b"fresh")]
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


async def test_save_failure_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "originals"
    blocker.write_bytes(b"a file where the folder should be")
    originals = Originals(blocker)
    with caplog.at_level(logging.WARNING, logger="bot.originals"):
        await originals.save("r1", [("a.png", b"a")])
        assert await originals.load("r1") == []
    assert "could not keep the originals of r1" in caplog.text
