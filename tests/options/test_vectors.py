"""dhcpcd 9.4.1 vectors and captures: decode, locate and verify RFC 3118 / RFC 6704 MACs.

The payloads come from a real dhcpcd and a test responder it accepted (shared/vectors/README.md).
Each vector must decode to the message type its comment names, carry its MAC where the comment
says, verify with the key of the dhcpcd.conf used for the run (or the RFC 6704 nonce), be
reproduced byte for byte by our signer and encoder, and stop verifying when any bit the MAC
covers is flipped. The pcaps add the frames dhcpcd rejected.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from oracle_helpers import (
    CapturedPayload,
    DhcpcdToken,
    Vector,
    dhcpcd_token,
    dhcpcd_vectors_dir,
    read_pcap_payloads,
    read_vectors,
    shared_path,
)

from options import DecodeError, MessageType, decode_message, encode_message, rfc3118, rfc6704
from options.rfc3118 import AUTHENTICATION, MAC_SIZE, AuthProtocol, MacKey, StaticKeys, verify

# Collection must not fail when shared/ is missing (that would hide every other test's
# result); test_shared_vectors_are_present fails instead, with the reason.
_DIR = shared_path() / "vectors" / "dhcpcd-9.4.1"
_VECTOR_FILES = sorted(_DIR.glob("*.vectors.txt")) if _DIR.is_dir() else []
_PCAPS = sorted(_DIR.glob("*.pcap")) if _DIR.is_dir() else []
VECTORS = [v for path in _VECTOR_FILES for v in read_vectors(path)]

#: The project's own recordings (tests/vectors/README.md): same format, same per-vector checks.
LOCAL_DIR = Path(__file__).resolve().parents[1] / "vectors"
LOCAL_VECTORS = [v for path in sorted(LOCAL_DIR.glob("*/*.vectors.txt")) for v in read_vectors(path)]
LOCAL_PCAPS = sorted(LOCAL_DIR.glob("*/*.pcap"))
ALL_VECTORS = VECTORS + LOCAL_VECTORS

#: Which dhcpcd.conf each capture was made with (the README and the .conf comments say so).
CONF_FOR = {
    "01_discover_delayed": "delayed.conf",
    "02_delayed_bind": "delayed.conf",
    "06_fr_delayed": "delayed.conf",
    "07_delayedrealm": "delayedrealm.conf",
    "08_nonce": "nonce.conf",
}

#: Frames carrying option 90 with a MAC (or none at all where dhcpcd needs one) that dhcpcd
#: dropped for their authentication: the README's "no auth, bad key, bad MAC" FORCERENEWs.
#: In 07 and 08 the capture shows no REQUEST answering them. Our verify must refuse each.
REJECTED = {
    ("06_fr_delayed", 5): "no authentication option",
    ("06_fr_delayed", 6): "MAC mismatch",
    ("06_fr_delayed", 7): "MAC mismatch",
    ("07_delayedrealm", 8): "MAC mismatch",
    ("08_nonce", 5): "no authentication option",
    ("08_nonce", 6): "MAC mismatch",
}

HOPS = 3
GIADDR = range(24, 28)


def _ids(vector: Vector) -> str:
    return vector.name if vector in VECTORS else f"local:{vector.path.parent.name}/{vector.name}"


@cache
def _token(source: str) -> DhcpcdToken | None:
    return dhcpcd_token(dhcpcd_vectors_dir() / CONF_FOR[source])


@cache
def _keys_for(source: str) -> StaticKeys:
    """The keys of the dhcpcd.conf a shared capture was made with, by secret ID (and realm)."""
    token = _token(source)
    assert token is not None, f"{CONF_FOR[source]} has no authtoken"
    return _static_keys(token)


def _static_keys(token: DhcpcdToken) -> StaticKeys:
    if token.realm:
        return StaticKeys({(token.realm, token.secret_id): token.key})
    return StaticKeys({token.secret_id: token.key})


@cache
def _local_token(vector: Vector) -> DhcpcdToken:
    """A local vector's credentials: ``<stem>.conf`` beside it if present, else the comment's key
    under the secret ID and realm the payload names (tests/vectors/README.md)."""
    conf = vector.path.with_name(f"{vector.source}.conf")
    token = dhcpcd_token(conf) if conf.is_file() else None
    if token is not None:
        return token
    auth = decode_message(vector.payload).options.value(AUTHENTICATION)
    assert auth.secret_id is not None and vector.key is not None, vector.name
    return DhcpcdToken(auth.secret_id, auth.realm, vector.key)


def _token_of(vector: Vector) -> DhcpcdToken | None:
    if vector.protocol == AuthProtocol.RECONFIGURE_KEY:
        return None
    return _token(vector.source) if vector in VECTORS else _local_token(vector)


def _vector_check(vector: Vector, payload: bytes) -> rfc3118.AuthCheck:
    """Verify ``payload`` the way a receiver holding the vector's credentials would."""
    if vector.protocol == AuthProtocol.RECONFIGURE_KEY:
        return verify(payload, None, nonce=vector.nonce)
    if vector in VECTORS:
        return verify(payload, _keys_for(vector.source))
    return verify(payload, _static_keys(_local_token(vector)))


def _captures() -> Iterator[tuple[Path, list[CapturedPayload]]]:
    for pcap in _PCAPS:
        yield pcap, read_pcap_payloads(pcap)


# ---------------------------------------------------------------------------------------------


def test_shared_vectors_are_present() -> None:
    directory = dhcpcd_vectors_dir()  # fails, not skips, when shared/ is missing
    stems = {p.name.removesuffix(".vectors.txt") for p in directory.glob("*.vectors.txt")}
    assert stems == {"06_fr_delayed", "07_delayedrealm", "08_nonce"}
    assert {p.stem for p in directory.glob("*.pcap")} == set(CONF_FOR)
    assert len(VECTORS) == 23
    assert {v.protocol for v in VECTORS} == {1, 2, 3}


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=_ids)
def test_vector_decodes_to_the_named_message_type(vector: Vector) -> None:
    msg = decode_message(vector.payload)
    assert msg.message_type is MessageType["DHCP" + vector.message_type]
    assert msg.wire == vector.payload
    auth = msg.options.value(AUTHENTICATION)
    assert auth.protocol == vector.protocol
    assert auth.has_mac


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=_ids)
def test_vector_mac_offset_is_where_locate_authentication_finds_it(vector: Vector) -> None:
    start, end = rfc3118.locate_authentication(vector.payload)
    assert end - MAC_SIZE == vector.mac_offset
    # The option header sits right before the value: code 90 and its length.
    assert vector.payload[start - 2 : start] == bytes((90, end - start))


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=_ids)
def test_vector_verifies_with_the_configured_credentials(vector: Vector) -> None:
    check = _vector_check(vector, vector.payload)
    assert check.valid, check.reason
    assert check.auth is not None
    if vector.protocol == AuthProtocol.RECONFIGURE_KEY:
        assert vector.nonce is not None
        wrong = verify(vector.payload, None, nonce=bytes(16))
    else:
        token = _token_of(vector)
        assert token is not None
        # The comment's key is the one dhcpcd was configured with, for the secret ID it names.
        assert vector.key == token.key
        assert check.auth.secret_id == token.secret_id
        assert check.auth.realm == token.realm
        assert vector.key is not None
        wrong = verify(vector.payload, StaticKeys({token.secret_id: vector.key[::-1]}))
        unknown = verify(vector.payload, StaticKeys({token.secret_id + 1: vector.key}))
        assert not unknown.valid
        assert unknown.reason.startswith("unknown secret ID")
    assert not wrong.valid
    assert wrong.reason == "MAC mismatch"


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=_ids)
def test_our_signer_reproduces_the_vector_mac(vector: Vector) -> None:
    key = vector.nonce if vector.protocol == AuthProtocol.RECONFIGURE_KEY else vector.key
    assert key is not None
    zeroed = bytearray(vector.payload)
    zeroed[vector.mac_offset : vector.mac_offset + MAC_SIZE] = bytes(MAC_SIZE)
    assert rfc3118.sign(bytes(zeroed), key) == vector.payload
    assert rfc3118.sign(bytes(zeroed), MacKey(key)) == vector.payload  # the precomputed form


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_our_encoder_reproduces_the_dhcpcd_vector(vector: Vector) -> None:
    """Re-encoding the decoded value at the peer's size gives its bytes back, padding included.

    Only for the dhcpcd vectors: another peer may lay out (pad, split, order) differently.
    """
    msg = decode_message(vector.payload)
    size = len(vector.payload)
    assert encode_message(msg, max_payload=size, pad_to=size) == vector.payload


@pytest.mark.parametrize("vector", ALL_VECTORS, ids=_ids)
def test_vector_any_covered_bit_flip_fails_verification(vector: Vector) -> None:
    """RFC 3118 5.1: the MAC covers the whole message except hops and giaddr.

    Every one of the payload's bits is flipped in turn: outside hops and giaddr the result must
    be undecodable or fail verification; inside them it must still verify.
    """
    buf = bytearray(vector.payload)
    accepted: list[int] = []
    rejected_excluded: list[int] = []
    for bit in range(len(buf) * 8):
        index, mask = bit >> 3, 1 << (bit & 7)
        buf[index] ^= mask
        flipped = bytes(buf)
        buf[index] ^= mask
        excluded = index == HOPS or index in GIADDR
        try:
            decode_message(flipped)
        except DecodeError:
            assert not excluded, f"flipping bit {bit} of hops/giaddr made the message undecodable"
            continue
        valid = _vector_check(vector, flipped).valid
        if excluded and not valid:
            rejected_excluded.append(bit)
        elif valid and not excluded:
            accepted.append(bit)
    assert accepted == [], f"bit flips at {accepted} still verify"
    assert rejected_excluded == [], f"hops/giaddr bit flips at {rejected_excluded} broke the MAC"


# ---------------------------------------------------------------------------------------------
# The pcaps


def test_every_captured_dhcp_payload_decodes() -> None:
    seen = 0
    for pcap, captured in _captures():
        assert captured, f"{pcap.name}: no DHCP payloads"
        for frame in captured:
            msg = decode_message(frame.payload)
            assert msg.message_type is not None, frame.name
            # Replies come from the server port, requests from the client port.
            assert msg.op == (2 if frame.sport == 67 else 1), frame.name
            seen += 1
    assert seen == 46


def test_every_locally_recorded_dhcp_payload_decodes() -> None:
    """tests/vectors/*/*.pcap (none yet is fine): every DHCP payload on ports 67/68 decodes."""
    for pcap in LOCAL_PCAPS:
        captured = read_pcap_payloads(pcap)
        assert captured, f"{pcap}: no DHCP payloads on ports 67/68"
        for frame in captured:
            assert decode_message(frame.payload).message_type is not None, frame.name


def test_vectors_are_the_captured_frames() -> None:
    frames = {(c.source, c.frame): c.payload for _, captured in _captures() for c in captured}
    for vector in VECTORS:
        assert frames[(vector.source, vector.frame)] == vector.payload, vector.name


def test_captured_authentication_outcomes() -> None:
    """Valid exactly for the recorded vectors (and 02's exchange); refused for the forgeries.

    RFC 6704 FORCERENEWs are checked with the nonce of the latest DHCPACK before them, as
    dhcpcd holds it; delayed-authentication frames with the key of the run's dhcpcd.conf.
    """
    vector_frames = {(v.source, v.frame) for v in VECTORS}
    refused: dict[tuple[str, int], str] = {}
    for pcap, captured in _captures():
        token = _token(pcap.stem)
        keys = _keys_for(pcap.stem) if token is not None else None
        nonce: bytes | None = None
        for frame in captured:
            msg = decode_message(frame.payload)
            auth = msg.options.get_value(AUTHENTICATION)
            if auth is not None and (delivered := rfc6704.nonce_of(auth)) is not None:
                nonce = delivered
            check = verify(frame.payload, keys, nonce=nonce)
            key = (pcap.stem, frame.frame)
            needs_mac = msg.message_type not in (MessageType.DHCPDISCOVER, MessageType.DHCPINFORM)
            if pcap.stem == "08_nonce":
                # Without authprotocol only FORCERENEW is authenticated (the ACK hands out the nonce).
                needs_mac = msg.message_type is MessageType.DHCPFORCERENEW
            if not needs_mac:
                continue
            if key in vector_frames or pcap.stem == "02_delayed_bind":
                assert check.valid, f"{frame.name}: {check.reason}"
            else:
                assert not check.valid, f"{frame.name} verified but dhcpcd rejected it"
                refused[key] = check.reason
    assert refused == REJECTED


def test_nonce_vectors_use_the_nonce_the_ack_delivered() -> None:
    acks = [
        decode_message(c.payload)
        for c in read_pcap_payloads(dhcpcd_vectors_dir() / "08_nonce.pcap")
        if decode_message(c.payload).message_type is MessageType.DHCPACK
    ]
    delivered = {rfc6704.nonce_of(m.options.value(AUTHENTICATION)) for m in acks}
    assert delivered == {v.nonce for v in VECTORS if v.protocol == AuthProtocol.RECONFIGURE_KEY}


def test_dhcpcd_stateful_rejections_carry_valid_macs() -> None:
    """06: frame 8 (wrong xid) and frame 9 (replay value equal to the ACK's) verify.

    dhcpcd dropped them for state, not for the MAC: xid and replay checks belong to the
    engine, and these frames show a MAC check alone would let them through.
    """
    captured = {c.frame: c.payload for c in read_pcap_payloads(dhcpcd_vectors_dir() / "06_fr_delayed.pcap")}
    keys = _keys_for("06_fr_delayed")
    request, ack = decode_message(captured[3]), decode_message(captured[4])
    wrong_xid, equal_replay = decode_message(captured[8]), decode_message(captured[9])
    assert verify(captured[8], keys).valid
    assert verify(captured[9], keys).valid
    assert wrong_xid.xid != request.xid
    assert equal_replay.xid == request.xid
    replay = equal_replay.options.value(AUTHENTICATION).replay_detection
    assert replay == ack.options.value(AUTHENTICATION).replay_detection
