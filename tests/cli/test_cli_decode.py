"""``ce-autoconf decode`` end to end: in-process through ``main`` and once as a real process.

The shipped captures are dhcpcd 9.4.1 exchanges recorded in this workplace; the
``*.vectors.txt`` files next to them list the frames whose MAC is good, so "every MAC
verifies with the right key and fails with a wrong one" is checked frame by frame.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from ce_autoconf.cli import main
from options import BOOTREPLY, DhcpMessage, MessageType, Options, decode_tool, encode_message, rfc2132

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "examples" / "captures"
KEY_HEX = "7264632d7365637265742d6b65792d31"  # ASCII "rdc-secret-key-1", secret ID 0x1234
KEY = f"0x1234:{KEY_HEX}"
WRONG_KEY = "0x1234:" + "00" * 16
NONCE_HEX = "f4f5527412f609b1240a86e2e18d02d0"  # from 08_nonce.vectors.txt

HEADER_KEYS = ["op", "htype", "hlen", "hops", "xid", "secs", "flags", "ciaddr", "yiaddr", "siaddr", "giaddr"]
MESSAGE_KEYS = {
    "source",
    *HEADER_KEYS,
    "chaddr",
    "sname",
    "file",
    "message_type",
    "options",
    "auth",
}
AUTH_KEYS = {"protocol", "algorithm", "rdm", "replay_detection", "secret_id", "valid", "reason"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]]]:
    status, out, _ = run(capsys, "decode", "--json", *argv)
    return status, [json.loads(line) for line in out.splitlines()]


def frame_number(source: str) -> int:
    match = re.search(r":frame (\d+)$", source)
    assert match, source
    return int(match.group(1))


def good_frames(vectors: Path) -> set[int]:
    """The frames a vectors file lists: those whose MAC verifies."""
    return {int(m) for m in re.findall(r"^# frame (\d+) ", vectors.read_text(), re.MULTILINE)}


def small_message(xid: int = 7) -> bytes:
    msg = DhcpMessage(
        op=BOOTREPLY,
        xid=xid,
        chaddr=bytes.fromhex("020000770032"),
        options=Options(
            [
                rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK),
                rfc2132.SUBNET_MASK.item(IPv4Address("255.255.255.0")),
                (250, b"\x01\x02"),
            ]
        ),
    )
    return encode_message(msg)


# --------------------------------------------------------------------------- the command


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out.startswith("ce-autoconf ")


def test_help_documents_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "decode", "--help")
    assert status == 0
    for phrase in ("--key", "--nonce", "--strict", "--registry-codes", "sname", "exit status"):
        assert phrase in out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)
    assert status == 2
    assert "COMMAND" in err or "required" in err


# --------------------------------------------------------------------------- JSON schema


def test_json_schema_keys_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    status, records = run_json(capsys, "--key", KEY, str(CAPTURES / "02_delayed_bind.pcap"))
    assert status == 0
    assert [r["message_type"] for r in records] == ["DHCPDISCOVER", "DHCPOFFER", "DHCPREQUEST", "DHCPACK"]
    for record in records:
        assert set(record) == MESSAGE_KEYS
        assert all(isinstance(record[k], int) for k in HEADER_KEYS[:7])
        assert record["chaddr"] == "020000770032"
        for option in record["options"]:
            assert set(option) == {"code", "name", "value"}
        assert set(record["auth"]) == AUTH_KEYS
    ack = records[3]
    assert ack["source"].endswith("02_delayed_bind.pcap:frame 4")
    assert ack["yiaddr"] == "10.77.0.50"
    options = {o["code"]: o for o in ack["options"]}
    assert options[53] == {"code": 53, "name": "message_type", "value": 5}
    assert options[54]["value"] == "10.77.0.1"
    assert options[51]["value"] == 3600
    assert ack["auth"]["protocol"] == 1
    assert ack["auth"]["secret_id"] == 0x1234
    assert ack["auth"]["valid"] is True


def test_unknown_option_and_bootp_fields(capsys: pytest.CaptureFixture[str]) -> None:
    payload = small_message()
    status, records = run_json(capsys, "--hex", payload.hex())
    assert status == 0
    (record,) = records
    assert record["source"] == "hex:1"
    assert record["sname"] == ""
    assert record["file"] == ""
    assert record["auth"] is None
    assert {"code": 250, "name": "unknown", "value": "0102"} in record["options"]
    assert {"code": 1, "name": "subnet_mask", "value": "255.255.255.0"} in record["options"]


def test_bootp_message_type_is_null(capsys: pytest.CaptureFixture[str]) -> None:
    msg = DhcpMessage(op=BOOTREPLY, xid=1, chaddr=b"\x02" * 6, sname=b"boot-server", file=b"\xff\xfe")
    status, records = run_json(capsys, "--hex", encode_message(msg).hex())
    assert status == 0
    assert records[0]["message_type"] is None
    assert records[0]["sname"] == "boot-server"
    assert records[0]["file"] == "fffe"  # not text: hex


def test_registry_codes_move_the_vpn_options(capsys: pytest.CaptureFixture[str]) -> None:
    msg = DhcpMessage(
        op=BOOTREPLY,
        options=Options([rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK), (230, bytes([10, 0, 0, 9]))]),
    )
    hexed = encode_message(msg).hex()
    _, default = run_json(capsys, "--hex", hexed)
    assert {"code": 230, "name": "unknown", "value": "0a000009"} in default[0]["options"]
    status, moved = run_json(capsys, "--registry-codes", "229,230", "--hex", hexed)
    assert status == 0
    assert {"code": 230, "name": "vpn_configuration_servers", "value": ["10.0.0.9"]} in moved[0]["options"]
    status, _, err = run(capsys, "decode", "--registry-codes", "12,13", "--hex", hexed)
    assert status == 2
    assert "site-specific" in err


# --------------------------------------------------------------------------- MACs


@pytest.mark.parametrize("name", ["02_delayed_bind", "06_fr_delayed"])
def test_every_mac_verifies_with_the_right_key_only(capsys: pytest.CaptureFixture[str], name: str) -> None:
    capture = str(CAPTURES / f"{name}.pcap")
    _, right = run_json(capsys, "--key", KEY, capture)
    _, wrong = run_json(capsys, "--key", WRONG_KEY, capture)
    with_mac = {frame_number(r["source"]) for r in right if r["auth"] and r["auth"]["secret_id"] is not None}
    valid = {frame_number(r["source"]) for r in right if r["auth"] and r["auth"]["valid"]}
    assert with_mac
    vectors = CAPTURES / f"{name}.vectors.txt"
    # Every frame listed as good verifies; the frames dhcpcd rejected for a bad MAC do not.
    assert valid == (good_frames(vectors) if vectors.exists() else with_mac)
    assert not any(r["auth"] and r["auth"]["valid"] for r in wrong)
    for r in wrong:
        if r["auth"] and r["auth"]["secret_id"] is not None:
            assert r["auth"]["reason"] == "MAC mismatch"


def test_forged_forcerenews_in_06_are_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    _, records = run_json(capsys, "--key", KEY, str(CAPTURES / "06_fr_delayed.pcap"))
    by_frame = {frame_number(r["source"]): r for r in records}
    assert by_frame[5]["message_type"] == "DHCPFORCERENEW"
    assert by_frame[5]["auth"] is None  # sent without option 90
    assert by_frame[6]["auth"]["valid"] is False
    assert by_frame[7]["auth"]["valid"] is False


def test_nonce_learned_from_the_ack_verifies_forcerenews(capsys: pytest.CaptureFixture[str]) -> None:
    capture = CAPTURES / "08_nonce.pcap"
    _, records = run_json(capsys, str(capture))
    type2 = {
        frame_number(r["source"]): r["auth"]
        for r in records
        if r["auth"] and r["message_type"] == "DHCPFORCERENEW" and r["auth"]["protocol"] == 3
    }
    assert {f for f, a in type2.items() if a["valid"]} == good_frames(CAPTURES / "08_nonce.vectors.txt")
    assert any(not a["valid"] for a in type2.values())  # the forged one
    acks = [r for r in records if r["message_type"] == "DHCPACK"]
    assert all(r["auth"]["valid"] is False and "nonce" in r["auth"]["reason"] for r in acks)


def test_nonce_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    vectors = str(CAPTURES / "08_nonce.vectors.txt")
    _, without = run_json(capsys, vectors)
    assert without
    assert all(r["auth"]["valid"] is False for r in without)
    assert all("nonce" in r["auth"]["reason"] for r in without)
    status, with_nonce = run_json(capsys, "--nonce", NONCE_HEX, "--strict", vectors)
    assert status == 0
    assert len(with_nonce) == 3
    assert all(r["auth"]["valid"] for r in with_nonce)
    assert all(r["source"].startswith(vectors + ":line ") for r in with_nonce)


def test_auth_reported_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    _, records = run_json(capsys, str(CAPTURES / "02_delayed_bind.pcap"))
    assert all(r["auth"] is not None and r["auth"]["valid"] is False for r in records)
    assert "no key for secret ID 0x1234" in records[1]["auth"]["reason"]
    assert records[0]["auth"]["secret_id"] is None  # DISCOVER: no credentials yet


def test_vectors_file_is_hex_input(capsys: pytest.CaptureFixture[str]) -> None:
    vectors = CAPTURES / "06_fr_delayed.vectors.txt"
    status, records = run_json(capsys, "--key", KEY, "--strict", str(vectors))
    assert status == 0
    assert len(records) == len(good_frames(vectors))
    assert all(r["auth"]["valid"] for r in records)


# --------------------------------------------------------------------------- table


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "decode", "--key", KEY, str(CAPTURES / "06_fr_delayed.pcap"))
    assert status == 0
    assert out.isascii()
    assert "06_fr_delayed.pcap:frame 4" in out
    assert re.search(r"^\s+53 message_type\s+DHCPACK \(5\)$", out, re.MULTILINE)
    assert "auth: delayed(1) hmac-md5 rdm=0 replay=2 secret_id=0x1234 VALID" in out
    assert "INVALID: MAC mismatch" in out
    assert "18 frames, 18 DHCP datagrams" in err
    assert "decoded 18 messages" in err


# --------------------------------------------------------------------------- errors and exit status


def test_truncated_hex_line_is_one_error_and_the_next_message_prints(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = small_message(xid=1).hex()
    cut = small_message(xid=2)[:200].hex()
    text = tmp_path / "messages.txt"
    text.write_text(f"# two messages, the first cut short\n{cut}\n\n{good}\n")
    status, out, _ = run(capsys, "decode", "--json", str(text))
    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2
    error, message = lines
    assert set(error) == {"source", "error", "offset"}
    assert error["source"] == f"{text}:line 2"
    assert error["offset"] == 200
    assert "240" in error["error"]
    assert message["xid"] == 1
    assert message["source"] == f"{text}:line 4"

    status, out, _ = run(capsys, "decode", str(text))
    table_lines = out.splitlines()
    assert (
        table_lines[0]
        == f"{text}:line 2: malformed: message of 200 bytes is shorter than the 240-byte fixed part"
        " (offset 200)"
    )
    assert any(line.startswith(f"{text}:line 4") for line in table_lines[1:])

    status, _, _ = run(capsys, "decode", "--strict", str(text))
    assert status == 1


def test_bad_hex_reports_the_column(capsys: pytest.CaptureFixture[str]) -> None:
    status, records = run_json(capsys, "--hex", "02 01 zz")
    assert status == 0
    assert records == [{"source": "hex:1", "error": "bad hex: not a hex digit: 'z'", "offset": 6}]


def test_raw_binary_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    raw = tmp_path / "ack.bin"
    raw.write_bytes(small_message(xid=0x1234))
    _, records = run_json(capsys, str(raw))
    assert records[0]["source"] == str(raw)
    assert records[0]["xid"] == 0x1234


def test_stdin_dash(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data = (CAPTURES / "02_delayed_bind.pcap").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    _, records = run_json(capsys, "--key", KEY, "-")
    assert [frame_number(r["source"]) for r in records] == [1, 2, 3, 4]
    assert records[0]["source"] == "<stdin>:frame 1"


def test_missing_file_and_damaged_capture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    damaged = tmp_path / "cut.pcap"
    damaged.write_bytes((CAPTURES / "02_delayed_bind.pcap").read_bytes()[:500])
    status, out, err = run(capsys, "decode", "--json", str(tmp_path / "absent.pcap"), str(damaged))
    assert status == 1
    assert "Traceback" not in err
    assert "cannot open" in err
    assert "damaged capture: record data truncated" in err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["error"].startswith("cannot open")
    # the frame before the damage still decoded, then the damage is reported
    assert records[1]["source"].endswith("cut.pcap:frame 1")
    assert records[2]["source"] == str(damaged)
    assert records[2]["offset"] > 24


def test_garbage_capture_magic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 6)
    status, _, err = run(capsys, "decode", str(bad))
    assert status == 1
    assert "damaged capture" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- secrets


def test_keys_never_appear_in_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    capture = str(CAPTURES / "06_fr_delayed.pcap")
    for args in (
        ["decode", "--key", KEY, capture],
        ["decode", "--json", "--key", KEY, capture],
        ["decode", "--key", KEY, "--key", "0x1234:" + "ab" * 16, capture],  # conflicting keys
        ["decode", "--key", "0xZZ:" + KEY_HEX, capture],  # bad secret ID
        ["decode", "--key", "0x1234:" + KEY_HEX + "0", capture],  # odd digits
        ["decode", "--key", "0x1234" + KEY_HEX, capture],  # no colon
        ["decode", "--kye", KEY, capture],  # misspelt option: argparse quotes it
        ["decode", "--nonce", NONCE_HEX + "00", capture],
    ):
        main(args)
        out, err = capsys.readouterr()
        for secret in (KEY_HEX, NONCE_HEX, "rdc-secret-key-1"):
            assert secret not in out
            assert secret not in err


def test_key_errors_name_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "decode", "--key", KEY, "--key", "4660:0g", "--hex", "00")
    assert status == 2
    assert "--key #2" in err
    assert "0x1234" in err
    status, _, err = run(capsys, "decode", "--key", "nope:00", "--hex", "00")
    assert status == 2
    assert "--key #1" in err


def test_key_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# secret 0x1234\n{KEY}\n")
    status, records = run_json(capsys, "--key-file", str(keys), str(CAPTURES / "02_delayed_bind.pcap"))
    assert status == 0
    assert [r["auth"]["valid"] for r in records] == [False, True, True, True]
    keys.write_text("4660:xyz\n")
    status, _, err = run(capsys, "decode", "--key-file", str(keys), "--hex", "00")
    assert status == 2
    assert "line 1" in err


def test_strict_fails_on_bad_macs(capsys: pytest.CaptureFixture[str]) -> None:
    capture = str(CAPTURES / "06_fr_delayed.pcap")
    assert run(capsys, "decode", "--key", KEY, capture)[0] == 0
    assert run(capsys, "decode", "--strict", "--key", KEY, capture)[0] == 1
    assert run(capsys, "decode", "--strict", "--key", KEY, str(CAPTURES / "02_delayed_bind.pcap"))[0] == 0


# --------------------------------------------------------------------------- a real process


def test_console_script_as_a_process() -> None:
    script = shutil.which("ce-autoconf", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "ce_autoconf"]
    result = subprocess.run(
        [*command, "decode", "--json", "--key", KEY, str(CAPTURES / "06_fr_delayed.pcap")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 18
    assert sum(1 for r in records if r["auth"] and r["auth"]["valid"]) == 14
    assert KEY_HEX not in result.stdout + result.stderr
    module = subprocess.run(
        [sys.executable, "-m", "ce_autoconf", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.returncode == 0
    assert module.stdout.startswith("ce-autoconf ")


def test_overloaded_fields_and_non_utf8_text(capsys: pytest.CaptureFixture[str]) -> None:
    servers = tuple(IPv4Address(0x0A000000 + i) for i in range(60))
    msg = DhcpMessage(
        op=BOOTREPLY,
        options=Options(
            [
                rfc2132.MESSAGE_TYPE.item(MessageType.DHCPACK),
                rfc2132.DOMAIN_NAME_SERVER.item(servers),
                (12, b"h\x80st\x07"),  # host name with a byte that is not UTF-8 and a control
            ]
        ),
    )
    wire = encode_message(msg, max_payload=400)  # too small: options spill into file and sname
    _, records = run_json(capsys, "--hex", wire.hex())
    (record,) = records
    options = {o["code"]: o["value"] for o in record["options"]}
    assert options[52] == 3  # as received, although the codec folds it away
    assert options[6] == [str(s) for s in servers]
    assert options[12] == "h\\x80st\x07"  # valid JSON for strict parsers: no lone surrogate
    assert record["file"] == wire[108:236].rstrip(b"\0").hex()
    assert record["sname"] == wire[44:108].rstrip(b"\0").hex()
    status, out, _ = run(capsys, "decode", "--hex", wire.hex())
    assert status == 0
    assert out.isascii()
    assert "sname=<options> file=<options>" in out
    assert "host_name" in out
    assert "h\\x80st\\x07" in out


def test_nonce_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_tool, "MAX_NONCE_CLIENTS", 2)
    decoder = decode_tool.Decoder(decode_tool.DecodeConfig())
    for client in (b"a", b"b", b"c"):
        decoder._remember((1, client), bytes(16), "test")
    assert sorted(c for _, c in decoder._nonces) == [b"b", b"c"]


def test_no_input_on_a_terminal_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Terminal()))
    status, _, err = run(capsys, "decode")
    assert status == 2
    assert "no input" in err


def test_malformed_option_value_is_reported_at_its_packet_offset(capsys: pytest.CaptureFixture[str]) -> None:
    wire = bytearray(small_message())
    start = wire.index(bytes([1, 4, 255, 255, 255, 0]), 240)  # subnet mask: code, length, value
    wire[start + 1 : start + 6] = bytes([3, 255, 255, 255])  # length 3 (and one byte fewer)
    _, records = run_json(capsys, "--hex", bytes(wire[:-1]).hex())
    (error,) = records
    assert "subnet_mask" in error["error"]
    assert error["offset"] == start + 2  # the first byte of the value
