"""`python -m bot` caps glibc's malloc arenas (megabytes freed by worker threads are reused)."""

from __future__ import annotations

import sys

import pytest

from bot.__main__ import MALLOC_ARENAS, limit_malloc_arenas


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_arena_cap_is_accepted_by_glibc() -> None:
    assert MALLOC_ARENAS == 2
    assert limit_malloc_arenas(MALLOC_ARENAS) is True
