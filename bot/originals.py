"""The lossless originals of recent results, kept on disk for the 📄 Original button.

Photos sent to Telegram are recompressed, so the bytes the service returned are kept under
`DATA_DIR/originals/<result id>/`: the newest `keep` results within `max_bytes` in all; older ones
are pruned on save, and a button whose files are gone answers "this result has expired".

A result's folder is written under a temporary name (`.tmp-…`, never a valid result id) and then
renamed into place, so a crash or a full disk never leaves a half-written result that a press on
📄 Original would send; leftovers of such a crash are removed on the first save after start-up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TMP_PREFIX = ".tmp-"
DEFAULT_MAX_BYTES = 1024 * 1_000_000


class Originals:
    """Save and load the original picture bytes of results."""

    def __init__(self, root: Path, *, keep: int = 300, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._root = root
        self._keep = keep
        self._max_bytes = max_bytes
        # Kept results (id -> bytes on disk), oldest first: read from disk once, then maintained
        # in memory, so a save does not list and stat every folder (saves run on worker threads,
        # hence the lock).
        self._kept: OrderedDict[str, int] | None = None
        self._total = 0
        self._lock = threading.Lock()

    async def save(self, result_id: str, files: Sequence[tuple[str, bytes | Path]]) -> None:
        """Keep `(filename, bytes)` pairs for a result; failures are logged, never raised.

        A `Path` instead of bytes is a spooled file on the same disk: it is moved, not copied.
        """
        try:
            await asyncio.to_thread(self._save, result_id, list(files))
        except OSError as exc:
            logger.warning("could not keep the originals of %s: %s", result_id, exc)

    async def load(self, result_id: str) -> list[tuple[str, bytes]]:
        """Return the kept `(filename, bytes)` pairs of a result (empty when gone)."""
        try:
            return await asyncio.to_thread(self._load, result_id)
        except OSError as exc:
            logger.warning("could not read the originals of %s: %s", result_id, exc)
            return []

    def _dir(self, result_id: str) -> Path:
        if not _SAFE_ID.match(result_id):
            raise OSError(f"unexpected result id {result_id!r}")
        return self._root / result_id

    def _save(self, result_id: str, files: list[tuple[str, bytes | Path]]) -> None:
        folder = self._dir(result_id)
        self._root.mkdir(parents=True, exist_ok=True)
        staging = self._root / f"{_TMP_PREFIX}{result_id}-{secrets.token_hex(4)}"
        try:
            staging.mkdir()
            size = 0
            for i, (name, data) in enumerate(files):
                target = staging / f"{i:02d}-{Path(name).name}"
                if isinstance(data, Path):
                    data.replace(target)
                    size += target.stat().st_size
                else:
                    target.write_bytes(data)
                    size += len(data)
            if folder.exists():  # saved again (the same id): the new files replace the old
                shutil.rmtree(folder)
            staging.replace(folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._prune(keep_id=result_id, size=size)

    def _load(self, result_id: str) -> list[tuple[str, bytes]]:
        folder = self._dir(result_id)
        if not folder.is_dir():
            return []
        return [
            (path.name.split("-", 1)[-1], path.read_bytes()) for path in sorted(folder.iterdir())
        ]

    def _prune(self, *, keep_id: str, size: int) -> None:
        """Remove the oldest results beyond `keep` or `max_bytes`, never the one just saved."""
        with self._lock:
            if self._kept is None:
                self._kept = OrderedDict(
                    (name, used) for _, name, used in self._on_disk() if name != keep_id
                )
                self._total = sum(self._kept.values())
            self._total -= self._kept.pop(keep_id, 0)
            self._kept[keep_id] = size
            self._total += size
            doomed: list[str] = []
            # Clocks go back, so "just saved" is by name, not by modification time.
            while len(self._kept) > 1 and (
                len(self._kept) > self._keep or self._total > self._max_bytes
            ):
                name, used = self._kept.popitem(last=False)
                self._total -= used
                doomed.append(name)
        for name in doomed:
            shutil.rmtree(self._root / name, ignore_errors=True)

    def _on_disk(self) -> list[tuple[int, str, int]]:
        """Return (modification time, name, bytes) of the result folders on disk, oldest first.

        Staging folders left by a crash are removed on the way.
        """
        aged: list[tuple[int, str, int]] = []
        for path in self._root.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if not path.is_dir() or not _SAFE_ID.match(path.name):
                continue
            try:
                used = sum(item.stat().st_size for item in path.iterdir())
                aged.append((path.stat().st_mtime_ns, path.name, used))
            except FileNotFoundError:  # removed meanwhile
                continue
        aged.sort()
        return aged
