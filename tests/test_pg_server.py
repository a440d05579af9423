"""The PostgreSQL test server (tests/pg.py) says why it cannot start, so that the tests needing
it fail with that reason instead of being skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg import PostgresServer, PostgresUnavailable, find_bindir


def test_broken_binaries_are_reported_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("initdb", "postgres"):
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\necho 'cannot work here' >&2\nexit 3\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert find_bindir() == tmp_path
    server = PostgresServer()
    with pytest.raises(PostgresUnavailable, match="initdb failed"):
        server.start()
    server.stop()
