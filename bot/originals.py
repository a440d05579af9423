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
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class Originals:
    """Save and load the original picture bytes of results."""

    def __init__(self, root: Path, *, keep: int = 300) -> None:
        self._root = root
        self._keep = keep

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
        aged: list[tuple[int, Path]] = []
        for path in self._root.iterdir():
            if path.name == keep_id or not path.is_dir():
                continue
            try:
                aged.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:  # removed meanwhile
                continue
        aged.sort(key=lambda item: item[0])
        for _, old in aged[: max(0, len(aged) + 1 - self._keep)]:
            shutil.rmtree(old, ignore_errors=True)
