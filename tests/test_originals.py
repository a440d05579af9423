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


async def test_prune_keeps_the_total_under_the_byte_cap(tmp_path: Path) -> None:
    originals = Originals(tmp_path, keep=100, max_bytes=2500)
    for i in range(5):
        await originals.save(f"r{i}", [("a.png", bytes([i]) * 1000)])
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["r3", "r4"]
    used = sum(f.stat().st_size for p in tmp_path.iterdir() for f in p.iterdir())
    assert used <= 2500


async def test_byte_cap_counts_what_was_on_disk_before_a_restart(tmp_path: Path) -> None:
    first = Originals(tmp_path, max_bytes=2500)
    for i in range(2):
        await first.save(f"old{i}", [("a.png", b"x" * 1000)])
        stamp = time.time_ns() - (10 - i) * 1_000_000_000
        os.utime(tmp_path / f"old{i}", ns=(stamp, stamp))
    again = Originals(tmp_path, max_bytes=2500)
    await again.save("new", [("a.png", b"y" * 1000)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old1"]


async def test_a_result_bigger_than_the_cap_is_still_kept_alone(tmp_path: Path) -> None:
    originals = Originals(tmp_path, max_bytes=10)
    await originals.save("small", [("a.png", b"x")])
    await originals.save("huge", [("a.png", b"y" * 100)])
    assert await originals.load("huge") == [("a.png", b"y" * 100)]
    assert await originals.load("small") == []


async def test_a_failed_write_leaves_no_half_result(tmp_path: Path, monkeypatch, caplog) -> None:
    originals = Originals(tmp_path)
    await originals.save("r1", [("a.png", b"old")])
    real_write = Path.write_bytes
    written: list[Path] = []

    def failing_write(self: Path, data: bytes) -> int:
        if written:  # the second file: the disk is full
            raise OSError(28, "No space left on device")
        written.append(self)
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing_write)
    with caplog.at_level(logging.WARNING, logger="bot.originals"):
        await originals.save("r1", [("a.png", b"new1"), ("b.png", b"new2")])
        await originals.save("r2", [("a.png", b"new1"), ("b.png", b"new2")])
    monkeypatch.undo()
    # The whole old result is still there; the failed one never appears; no staging left over.
    assert await originals.load("r1") == [("a.png", b"old")]
    assert await originals.load("r2") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]
    assert written and written[0].parent.name.startswith(".tmp-")
    assert "No space left" in caplog.text


async def test_staging_left_by_a_crash_is_cleaned_and_never_loaded(tmp_path: Path) -> None:
    crashed = tmp_path / ".tmp-r9-0000"
    crashed.mkdir()
    (crashed / "00-a.png").write_bytes(b"half")
    originals = Originals(tmp_path)
    assert await originals.load(".tmp-r9-0000") == []
    await originals.save("r1", [("a.png", b"a")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]
