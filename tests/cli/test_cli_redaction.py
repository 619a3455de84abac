"""argparse quotes what it did not understand; ``ce-autoconf`` must never quote a key back."""

from __future__ import annotations

import pytest

from ce_autoconf.cli import main

KEY = "00112233445566778899aabbccddeeff"


@pytest.mark.parametrize(
    "argv",
    [
        ["ce", "add", "ce-1", "--vpn", "7", KEY],  # a key pasted as a stray positional argument
        ["ce", "add", "ce-1", KEY.upper()],
        ["vpn", "list", "0x" + KEY],
        ["lease", "list", *[KEY[i : i + 2] for i in range(0, 32, 2)]],  # split by the shell
        ["ce", "add", "ce-1", ":".join(KEY[i : i + 2] for i in range(0, 32, 2))],
        [KEY],  # in place of the command
        ["server", "run", "--config", "x", "--log-level", KEY],  # a bad choice's value
    ],
)
def test_usage_errors_never_quote_a_hex_key(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "<redacted>" in err
    compact = err.replace(":", "").replace(" ", "").lower()
    assert KEY not in compact
    assert KEY[:16] not in compact


def test_ordinary_arguments_are_still_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ce", "add", "ce-1", "surplus", "deadbeef"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: surplus deadbeef" in err


def test_a_decode_key_without_its_secret_id_is_not_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--key", KEY]) == 2
    assert KEY not in capsys.readouterr().err
