"""The lossless originals of recent results, kept on disk for the 📄 Original button.

Photos sent to Telegram are recompressed, so the bytes the service returned are kept under
`DATA_DIR/originals/<result id>/`, newest `keep` results only; older ones are pruned on save, and
a button whose files are gone answers "this result has expired".
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class Originals:
    """Save and load the original picture bytes of results."""

    def __init__(self, root: Path, *, keep: int = 300) -> None:
        self._root = root
        self._keep = keep
        # Kept results, oldest first: read from disk once, then maintained in memory, so a save
        # does not list and stat every folder (saves run on worker threads, hence the lock).
        self._kept: deque[str] | None = None
        self._lock = threading.Lock()

    async def save(self, result_id: str, files: Sequence[tuple[str, bytes]]) -> None:
        """Keep `(filename, bytes)` pairs for a result; failures are logged, never raised."""
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

    def _save(self, result_id: str, files: list[tuple[str, bytes]]) -> None:
        folder = self._dir(result_id)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, data) in enumerate(files):
            (folder / f"{i:02d}-{Path(name).name}").write_bytes(data)
        self._prune(keep_id=result_id)

    def _load(self, result_id: str) -> list[tuple[str, bytes]]:
        folder = self._dir(result_id)
        if not folder.is_dir():
            return []
        return [
            (path.name.split("-", 1)[-1], path.read_bytes()) for path in sorted(folder.iterdir())
        ]

    def _prune(self, *, keep_id: str) -> None:
        """Remove the oldest results beyond `keep`, never the one just saved (clocks go back)."""
        with self._lock:
            if self._kept is None:
                self._kept = deque(name for _, name in self._on_disk() if name != keep_id)
            elif keep_id in self._kept:
                self._kept.remove(keep_id)
            self._kept.append(keep_id)
            doomed = [self._kept.popleft() for _ in range(max(0, len(self._kept) - self._keep))]
        for name in doomed:
            shutil.rmtree(self._root / name, ignore_errors=True)

    def _on_disk(self) -> list[tuple[int, str]]:
        """Return the result folders on disk with their modification times, oldest first."""
        aged: list[tuple[int, str]] = []
        for path in self._root.iterdir():
            if not path.is_dir():
                continue
            try:
                aged.append((path.stat().st_mtime_ns, path.name))
            except FileNotFoundError:  # removed meanwhile
                continue
        aged.sort()
        return aged
