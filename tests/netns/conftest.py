"""The network-namespace harness's fixtures for the tests of this directory.

``lab`` gives a :class:`netns.Lab` (namespaces, veth links, a bridge, processes, captures)
that is removed at the end of the test even when it fails; ``require_tools`` checks for
external programs. Both skip with a reason on a machine without root or namespaces and FAIL
under ``CI=true``. Tests elsewhere import them: ``from netns import lab, require_tools``
(tests/netns on ``sys.path``; see tests/server/test_driver.py).
"""

from __future__ import annotations

from netns import lab, require_tools

__all__ = ["lab", "require_tools"]
