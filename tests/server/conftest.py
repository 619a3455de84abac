"""Shared fixtures for the server's storage and configuration tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# pg_cluster (and netns, which it imports) are also plugins of some test modules: rewrite
# their asserts although this conftest imports them first.
pytest.register_assert_rewrite("netns", "pg_cluster")
from pg_cluster import postgres  # noqa: E402

__all__ = ["postgres", "store_path", "umask_022", "write_file"]  # postgres: the session's PostgreSQL cluster


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where a test's SQLite store lives (the file does not exist yet)."""
    return tmp_path / "store.sqlite"


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A permissive umask, as under a typical login shell, so file modes are tested honestly."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """Write ``text`` to ``tmp_path / name`` with ``mode`` and return the path."""

    def write(name: str, text: str, mode: int = 0o600) -> Path:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(mode)
        return path

    return write
