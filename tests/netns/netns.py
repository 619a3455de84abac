"""Network namespaces for tests: the harness of ``ce_autoconf.netns`` (which the demo shares),
plus its pytest fixtures.

Uniquely named namespaces linked by veth pairs (and a bridge), always removed; processes
started inside them with a bounded lifetime; a thread that enters a namespace (to run the
asyncio server in-process); waits with deadlines; tcpdump captures. See ce_autoconf/netns.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ce_autoconf.netns import (
    Capture,
    Lab,
    LoopThread,
    Namespace,
    NetnsUnavailableError,
    Process,
    netns_unavailable_reason,
    wait_for,
)

__all__ = [
    "Capture",
    "Lab",
    "LoopThread",
    "Namespace",
    "NetnsUnavailableError",
    "Process",
    "lab",
    "missing",
    "netns_unavailable_reason",
    "require_tools",
    "wait_for",
]


# == pytest fixtures ==========================================================================
# Defined here so that test modules outside tests/netns can import them (``from netns import
# lab``); tests/netns/conftest.py exposes them to the tests of this directory.

_reason: list[str | None] = []


def missing(reason: str) -> None:
    """Skip locally, FAIL under ``CI=true`` (a CI runner that lost its privileges must not pass)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def _netns_reason() -> str | None:
    if not _reason:
        _reason.append(netns_unavailable_reason())
    return _reason[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A fresh :class:`Lab` whose namespaces and processes die with the test, even on failure."""
    reason = _netns_reason()
    if reason is not None:
        missing(reason)
    the_lab = Lab(tmp_path)
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def scratch_netns(lab: Lab) -> str:
    """The name of one fresh namespace, removed with ``lab``: for tests that need only a kernel."""
    return lab.namespace("scratch").name


@pytest.fixture
def require_tools() -> Callable[..., dict[str, str]]:
    """``require_tools("dhcpcd", "tcpdump")`` -> their paths; skips (fails in CI) if one is missing."""

    def require(*names: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for name in names:
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
            if path is None:
                missing(f"{name} is not installed")
            else:
                found[name] = path
        return found

    return require
