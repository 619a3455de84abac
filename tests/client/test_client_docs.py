"""docs/client.md's sans-IO example runs as written, against our server engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_the_sans_io_example_in_the_guide_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    runnable = [b for b in blocks if "import" in b]
    assert len(runnable) == 1
    exec(compile(runnable[0], str(DOC), "exec"), {"__name__": "client_md"})
    out = capsys.readouterr().out
    assert out.startswith("bound 10.77.0.50 until 3600.0 s")
    assert "VpnPeersChanged(vpn_id=7" in out
