"""The management API over real HTTP on 127.0.0.1, with the engine behind the in-memory adapter.

Every JSON response is also checked against the OpenAPI document (api_helpers.request).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from api_helpers import TOKEN, ApiThread, capture_logs
from engine_helpers import REGISTRY, Client, config
from openapi_spec_validator import validate

from dhcp_server.actions import Event, Write
from dhcp_server.api import ROUTES, LocalManager, TokenFileError, load_token, openapi_document
from dhcp_server.engine import ServerEngine
from dhcp_server.logs import JsonFormatter, SecretFieldError, check_fields, log_event
from dhcp_server.model import AuthPolicy, ClientKey, QuarantinePolicy, VpnRecord
from dhcp_server.store import MemoryStore
from options import MessageType, decode_message

KEY = bytes.fromhex("5ec7e7a11ce0ffee0123456789abcdef")
MAC = bytes.fromhex("020000770001")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiThread]:
    server = ApiThread(tmp_path)
    try:
        yield server
    finally:
        server.close()


def make_vpn(api: ApiThread, vpn_id: int = 7, name: str = "corp") -> None:
    reply = api.request("POST", "/v1/vpns", {"id": vpn_id, "name": name, "vpn_servers": ["192.0.2.10"]})
    assert reply.status == 201, reply.text


def make_ce(api: ApiThread, name: str, mac: bytes, secret_id: int, key: bytes, vpns: Sequence[int]) -> None:
    body = {"hw": mac.hex(":"), "secret_id": secret_id, "key": key.hex(), "vpns": list(vpns)}
    reply = api.request("PUT", f"/v1/ces/{name}", body)
    assert reply.status == 201, reply.text


# == the document ==============================================================================


def test_openapi_document_is_valid_and_lists_exactly_the_routes_served(api: ApiThread) -> None:
    document = openapi_document()
    validate(document)  # raises if not a valid OpenAPI 3.1 document
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert documented == set(ROUTES)
    assert len(ROUTES) == len(set(ROUTES))
    # Path parameters are named the same in both.
    for method, template in ROUTES:
        names = {p.strip("{}") for p in template.split("/") if p.startswith("{")}
        item = document["paths"][template]
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert names == declared, (method, template)
    served = api.request("GET", "/openapi.json", token=None)
    assert served.status == 200
    assert served.json() == document
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }


# == the token =================================================================================


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789ab", f"Bearer {TOKEN}x", f"bearer {TOKEN}", TOKEN, "Basic dGVzdA=="],
)
def test_every_v1_route_needs_the_token(api: ApiThread, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, template in ROUTES:
        if template in {"/openapi.json", "/metrics"}:
            continue
        path = template.replace("{vpn_id}", "7").replace("{name}", "ce1").replace("{client}", "hw:01:02")
        body = {"name": "x"} if method in {"PUT", "POST"} else None
        reply = api.request(method, path, body, token=None, headers=headers)
        assert reply.status == 401, (method, path)
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json() == {"error": "missing or wrong bearer token"}
    # Nothing was changed by any of them.
    assert api.call(lambda: api.engine.directory.vpns) == {}


def test_token_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text(TOKEN + "\n")
    good.chmod(0o600)
    assert load_token(good) == TOKEN.encode()
    loose = tmp_path / "loose"
    loose.write_text(TOKEN)
    loose.chmod(0o640)
    with pytest.raises(TokenFileError, match="chmod 600"):
        load_token(loose)
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    with pytest.raises(TokenFileError, match="at least 16"):
        load_token(short)
    with pytest.raises(TokenFileError, match="cannot open"):
        load_token(tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(TokenFileError, match="cannot open"):
        load_token(link)


# == VPNs =======================================================================================


def test_vpn_create_read_update_delete_is_durable_at_each_answer(api: ApiThread) -> None:
    created = api.request("POST", "/v1/vpns", {"id": 7, "name": "corp", "vpn_servers": ["192.0.2.10"]})
    assert created.status == 201
    assert created.headers["location"] == "/v1/vpns/7"
    assert created.json() == {
        "id": 7,
        "name": "corp",
        "vpn_servers": ["192.0.2.10"],
        "auth": "required",
        "members": [],
    }
    # Durable when the answer came: the store has it.
    assert api.store.load().vpns[7].name == "corp"

    again = api.request("POST", "/v1/vpns", {"id": 7, "name": "other"})
    assert again.status == 409
    assert again.json()["field"] == "id"
    assert api.store.load().vpns[7].name == "corp"

    replaced = api.request("PUT", "/v1/vpns/7", {"name": "corp-2", "auth": "optional"})
    assert replaced.status == 200
    assert replaced.json()["auth"] == "optional"
    assert api.store.load().vpns[7].auth is AuthPolicy.OPTIONAL

    new = api.request("PUT", "/v1/vpns/9", {"id": 9, "name": "lab"})
    assert new.status == 201
    listed = api.request("GET", "/v1/vpns").json()["vpns"]
    assert [v["id"] for v in listed] == [7, 9]
    assert api.request("GET", "/v1/vpns/9").json()["name"] == "lab"

    assert api.request("DELETE", "/v1/vpns/9").status == 204
    assert 9 not in api.store.load().vpns
    assert api.request("GET", "/v1/vpns/9").status == 404
    assert api.request("DELETE", "/v1/vpns/9").status == 404


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("/v1/vpns", "POST", {"name": "no id"}, "id"),
        ("/v1/vpns", "POST", {"id": -1, "name": "x"}, "id"),
        ("/v1/vpns", "POST", {"id": 2**32, "name": "x"}, "id"),
        ("/v1/vpns", "POST", {"id": True, "name": "x"}, "id"),
        ("/v1/vpns", "POST", {"id": 1}, "name"),
        ("/v1/vpns", "POST", {"id": 1, "name": ""}, "name"),
        (
            "/v1/vpns",
            "POST",
            {"id": 1, "name": "x", "vpn_servers": ["192.0.2.1", "300.1.1.1"]},
            "vpn_servers[1]",
        ),
        ("/v1/vpns", "POST", {"id": 1, "name": "x", "vpn_servers": "192.0.2.1"}, "vpn_servers"),
        ("/v1/vpns", "POST", {"id": 1, "name": "x", "auth": "sometimes"}, "auth"),
        ("/v1/vpns", "POST", {"id": 1, "name": "x", "colour": "blue"}, "colour"),
        ("/v1/vpns", "POST", [1, 2], ""),
        ("/v1/vpns/7", "PUT", {"id": 8, "name": "x"}, "id"),
        ("/v1/vpns/seven", "PUT", {"name": "x"}, "vpn_id"),
        ("/v1/ces/a", "PUT", {"hw": "02:00:00:00:00:01", "client_id": "0102"}, "client_id"),
        ("/v1/ces/a", "PUT", {"hw": "zz:00"}, "hw"),
        ("/v1/ces/a", "PUT", {"client_id": "01"}, "client_id"),
        ("/v1/ces/a", "PUT", {"htype": 1, "static_address": "192.0.2.9"}, "htype"),
        ("/v1/ces/a", "PUT", {"vpns": []}, "hw"),
        ("/v1/ces/a", "PUT", {"hw": "020000000001", "key": "00ff"}, "key"),
        ("/v1/ces/a", "PUT", {"hw": "020000000001", "secret_id": 0, "key": "00ff" * 8}, "secret_id"),
        ("/v1/ces/a", "PUT", {"hw": "020000000001", "secret_id": 1, "key": "00ff" * 7}, "key"),
        ("/v1/ces/a", "PUT", {"hw": "020000000001", "vpns": [1, "2"]}, "vpns[1]"),
        ("/v1/ces/a", "PUT", {"hw": "020000000001", "static_address": "x"}, "static_address"),
        ("/v1/ces/a", "PUT", {"name": "b", "hw": "020000000001"}, "name"),
        ("/v1/ces/-bad", "PUT", {"hw": "020000000001"}, "name"),
        ("/v1/quarantine/nonsense", "DELETE", None, "client"),
        ("/v1/leases?state=lost", "GET", None, "state"),
    ],
)
def test_validation_errors_name_the_field(
    api: ApiThread, path: str, method: str, body: object, field: str
) -> None:
    reply = api.request(method, path, body)
    assert reply.status == 400, reply.text
    assert reply.json()["field"] == field
    assert api.store.load().vpns == {}
    assert api.store.load().ces == {}


def test_body_must_be_json(api: ApiThread) -> None:
    not_json = api.request("POST", "/v1/vpns", raw=b"{id: 1", headers={"Content-Type": "application/json"})
    assert not_json.status == 400
    assert "not valid JSON" in not_json.json()["error"]
    nan = api.request("POST", "/v1/vpns", raw=b'{"id": NaN, "name": "x"}')
    assert nan.status == 400
    form = api.request(
        "POST", "/v1/vpns", raw=b"id=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status == 415
    empty = api.request("POST", "/v1/vpns", raw=b"")
    assert empty.status == 400


# == CEs =========================================================================================


def test_ce_put_get_list_delete_and_the_key_is_write_only(api: ApiThread) -> None:
    make_vpn(api)
    body = {"hw": MAC.hex(":"), "secret_id": 31, "key": KEY.hex(), "vpns": [7]}
    created = api.request("PUT", "/v1/ces/ce-1", body)
    assert created.status == 201
    assert created.json() == {
        "name": "ce-1",
        "hw": MAC.hex(":"),
        "htype": 1,
        "client": str(ClientKey.from_hardware(1, MAC)),
        "secret_id": 31,
        "has_key": True,
        "vpns": [7],
        "static_address": None,
        "address": None,
    }
    snapshot = api.store.load()
    assert snapshot.secrets[31] == KEY
    assert snapshot.ces["ce-1"].vpns == frozenset({7})

    # Without a key the stored one is kept; vpns may change.
    updated = api.request("PUT", "/v1/ces/ce-1", {"hw": MAC.hex(), "secret_id": 31, "vpns": []})
    assert updated.status == 200
    assert api.store.load().secrets[31] == KEY
    assert api.request("GET", "/v1/vpns/7").json()["members"] == []

    by_id = api.request(
        "PUT", "/v1/ces/ce-2", {"client_id": "01:02:00:00:77:00:02", "static_address": "192.0.2.77"}
    )
    assert by_id.status == 201
    assert by_id.json()["client_id"] == "01:02:00:00:77:00:02"
    listed = api.request("GET", "/v1/ces").json()["ces"]
    assert [c["name"] for c in listed] == ["ce-1", "ce-2"]
    for text in (created.text, updated.text, by_id.text, json.dumps(listed)):
        assert KEY.hex() not in text
        assert '"key"' not in text

    assert api.request("DELETE", "/v1/ces/ce-1").status == 204
    snapshot = api.store.load()
    assert "ce-1" not in snapshot.ces
    assert 31 not in snapshot.secrets  # the key goes with its CE
    assert api.request("GET", "/v1/ces/ce-1").status == 404
    assert api.request("DELETE", "/v1/ces/ce-1").status == 404


def test_ce_conflicts_are_409_naming_the_field(api: ApiThread) -> None:
    make_vpn(api)
    make_ce(api, "ce-1", MAC, 31, KEY, [7])
    cases = [
        ({"hw": "020000770009", "vpns": [8]}, "vpns"),
        ({"hw": MAC.hex()}, "hw"),
        ({"client_id": "0102", "secret_id": 31, "key": "00" * 16}, "secret_id"),
    ]
    for body, field in cases:
        reply = api.request("PUT", "/v1/ces/ce-2", body)
        assert reply.status == 409, reply.text
        assert reply.json()["field"] == field
    missing_key = api.request("PUT", "/v1/ces/ce-2", {"hw": "020000770009", "secret_id": 32})
    assert missing_key.status == 400
    assert missing_key.json()["field"] == "key"
    assert set(api.store.load().ces) == {"ce-1"}
    # A VPN with members cannot go.
    busy = api.request("DELETE", "/v1/vpns/7")
    assert busy.status == 409
    assert 7 in api.store.load().vpns


def test_bad_key_is_refused_without_quoting_it(api: ApiThread) -> None:
    secret = "not-hex-but-a-secret-passphrase"
    reply = api.request("PUT", "/v1/ces/a", {"hw": "020000000001", "secret_id": 3, "key": secret})
    assert reply.status == 400
    assert reply.json()["field"] == "key"
    assert secret not in reply.text
    # ...and a key in the wrong field is not quoted back either.
    wrong = api.request("PUT", "/v1/ces/a", {"hw": KEY.hex() * 3})
    assert wrong.status == 400
    assert KEY.hex() not in wrong.text


# == leases, FORCERENEW, quarantine, status ==================================================


def test_leases_and_an_operator_forcerenew(api: ApiThread) -> None:
    make_vpn(api)
    make_ce(api, "ce-1", MAC, 31, KEY, [7])
    client = Client(MAC, secret_id=31, key=KEY)
    address = api.bind(client)

    leases = api.request("GET", "/v1/leases").json()["leases"]
    assert leases == [
        {
            "address": str(address),
            "client": str(client.key_id),
            "ce": "ce-1",
            "state": "bound",
            "expires": "2027-01-15T08:10:00Z",
            "hostname": None,
        }
    ]
    assert api.request("GET", "/v1/leases?state=released").json()["leases"] == []
    assert api.request("GET", "/v1/ces/ce-1").json()["address"] == str(address)

    sent_before = api.call(lambda: len(api.manager.sent))
    reply = api.request("POST", "/v1/ces/ce-1/forcerenew")
    assert reply.status == 202
    assert reply.json()["ce"] == "ce-1"
    assert reply.json()["attempts"] == 1  # sent at once
    sent = api.call(lambda: api.manager.sent[sent_before:])
    assert len(sent) == 1
    assert sent[0].destination == address
    message = decode_message(sent[0].payload, REGISTRY)
    assert message.message_type is MessageType.DHCPFORCERENEW
    outstanding = api.request("GET", "/v1/forcerenews").json()["forcerenews"]
    assert [(f["ce"], f["attempts"], f["reason"]) for f in outstanding] == [("ce-1", 1, "operator request")]

    # The CE comes back: nothing is outstanding any more.
    api.bind(client)
    assert api.request("GET", "/v1/forcerenews").json()["forcerenews"] == []


def test_forcerenew_errors(api: ApiThread) -> None:
    assert api.request("POST", "/v1/ces/nobody/forcerenew").status == 404
    make_vpn(api)
    make_ce(api, "ce-1", MAC, 31, KEY, [7])
    no_lease = api.request("POST", "/v1/ces/ce-1/forcerenew")
    assert no_lease.status == 409
    assert "no lease" in no_lease.json()["error"]
    static = api.request("PUT", "/v1/ces/static", {"static_address": "192.0.2.50"})
    assert static.status == 201
    assert api.request("POST", "/v1/ces/static/forcerenew").status == 409


def test_quarantine_list_and_release(tmp_path: Path) -> None:
    cfg = config(AuthPolicy.OFF, quarantine=QuarantinePolicy(max_messages=3, window=60, duration=600))
    api = ApiThread(tmp_path, server_config=cfg)
    try:
        flooder = Client(bytes.fromhex("020000990001"))
        for _ in range(5):
            api.send(flooder.message(MessageType.DHCPDISCOVER))
        listed = api.request("GET", "/v1/quarantine").json()["quarantined"]
        assert listed == [{"client": str(flooder.key_id), "ce": None, "until": "2027-01-15T08:10:00Z"}]
        # The listed form is what release takes.
        assert api.request("DELETE", f"/v1/quarantine/{listed[0]['client']}").status == 204
        assert api.request("GET", "/v1/quarantine").json()["quarantined"] == []
        assert api.request("DELETE", f"/v1/quarantine/{listed[0]['client']}").status == 404
        # Served again.
        (offer,) = api.send(flooder.message(MessageType.DHCPDISCOVER))
        assert offer.message_type is MessageType.DHCPOFFER
    finally:
        api.close()


def test_status_summarises_counters(api: ApiThread) -> None:
    make_vpn(api)
    make_ce(api, "ce-1", MAC, 31, KEY, [7])
    api.bind(Client(MAC, secret_id=31, key=KEY))
    status = api.request("GET", "/v1/status").json()
    assert status["server_id"] == "10.77.0.1"
    assert status["leases"] == {"bound": 1, "released": 0, "expired": 0, "declined": 0}
    assert (status["vpns"], status["ces"]) == (1, 1)
    assert status["counters"]["received:DHCPDISCOVER"] == 1
    assert status["counters"]["sent:DHCPACK"] == 1
    assert status["driver"]["commits"] >= 3
    assert status["time"] == "2027-01-15T08:00:00Z"


# == HTTP ======================================================================================


def test_keep_alive_serves_several_requests_on_one_connection(api: ApiThread) -> None:
    conn = api.connection()
    try:
        make = api.request("POST", "/v1/vpns", {"id": 1, "name": "a"}, connection=conn)
        assert make.status == 201
        for _ in range(3):
            assert api.request("GET", "/v1/vpns", connection=conn).status == 200
        assert api.request("GET", "/nope", connection=conn).status == 404
        assert api.request("GET", "/v1/vpns/1", connection=conn).json()["name"] == "a"
    finally:
        conn.close()


def test_unknown_routes_and_methods(api: ApiThread) -> None:
    assert api.request("GET", "/v2/vpns").status == 404
    wrong = api.request("PATCH", "/v1/vpns/7", {"name": "x"})
    assert wrong.status == 405
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "PUT", "DELETE"}


def test_request_size_is_bounded(tmp_path: Path) -> None:
    api = ApiThread(tmp_path, max_body=1024)
    try:
        big = {"id": 1, "name": "x" * 2000}
        reply = api.request("POST", "/v1/vpns", big)
        assert reply.status == 413
        assert reply.headers.get("connection") == "close"
        assert api.store.load().vpns == {}
        # Chunked bodies are counted as they arrive.
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            chunk = b"x" * 800
            s.sendall(
                b"POST /v1/vpns HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2
            )  # fmt: skip
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 ")
    finally:
        api.close()


def test_malformed_http_gets_400_and_a_closed_connection(api: ApiThread) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost t\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer.lower()


def test_idle_connections_time_out(tmp_path: Path) -> None:
    api = ApiThread(tmp_path, request_timeout=0.2)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            s.sendall(b"GET /v1/status HTTP/1.1\r\n")  # and never the rest
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
    finally:
        api.close()


class FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def commit(self, writes: Sequence[Write]) -> None:
        if self.fail:
            raise OSError("disk full")
        super().commit(writes)


def test_a_failed_commit_is_503_not_success(tmp_path: Path) -> None:
    store = FailingStore()
    api = ApiThread(tmp_path, store=store)
    try:
        store.fail = True
        reply = api.request("POST", "/v1/vpns", {"id": 1, "name": "a"})
        assert reply.status == 503
        assert store.load().vpns == {}
    finally:
        api.close()


# == logs ======================================================================================


def test_a_ce_key_never_reaches_logs_responses_or_metrics(api: ApiThread) -> None:
    secret_hex = KEY.hex()
    with capture_logs() as logs:
        make_vpn(api)
        body = {"hw": MAC.hex(":"), "secret_id": 31, "key": secret_hex, "vpns": [7]}
        responses = [api.request("PUT", "/v1/ces/ce-1", body)]
        api.bind(Client(MAC, secret_id=31, key=KEY))
        responses += [
            api.request("PUT", "/v1/ces/ce-1", body),
            api.request("GET", "/v1/ces"),
            api.request("GET", "/v1/ces/ce-1"),
            api.request("GET", "/v1/leases"),
            api.request("GET", "/v1/status"),
            api.request("POST", "/v1/ces/ce-1/forcerenew"),
            api.request("GET", "/v1/forcerenews"),
            api.request("GET", "/metrics"),
            api.request("PUT", "/v1/ces/ce-2", {"hw": "020000000002", "secret_id": 31, "key": secret_hex}),
            api.request("PUT", "/v1/ces/ce-3", {"hw": "020000000003", "key": secret_hex}),
            api.request("DELETE", "/v1/ces/ce-1"),
        ]
    assert api.store.load().secrets == {}  # deleted with ce-1; it was there before
    everything = logs.text() + "".join(r.text for r in responses)
    for form in (secret_hex, secret_hex.upper(), KEY.hex(":"), repr(KEY), KEY.decode("latin-1")):
        assert form not in everything
    events = [e["event"] for e in logs.events()]
    assert "api.ce.created" in events
    assert "api.ce.updated" in events
    assert "api.request" in events
    put = next(e for e in logs.events() if e["event"] == "api.ce.created")
    assert put["fields"]["key_set"] is True
    assert put["fields"]["secret_id"] == 31
    # The client as operators write it (a ClientKey is bytes: logged raw it would be "<N bytes>").
    assert put["fields"]["client"].startswith(("hw:", "id:")), put["fields"]["client"]


def test_log_lines_are_json_with_ts_level_event_fields() -> None:
    formatter = JsonFormatter()
    logger = logging.getLogger("test.logs")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        log_event(logger, Event("lease.bound", (("address", IPv4Address("10.0.0.5")), ("ce", "a"))), xid=5)
        logger.info("%s", json.dumps({"event": "forcerenew.sent", "client": "hw:01:02", "attempt": 2}))
        logger.warning("plain %s", "text")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(formatter.format(r)) for r in records]
    assert {k: lines[0][k] for k in ("level", "logger", "event", "fields")} == {
        "level": "info",
        "logger": "test.logs",
        "event": "lease.bound",
        "fields": {"address": "10.0.0.5", "ce": "a", "xid": 5},
    }
    assert lines[0]["ts"].endswith("Z")
    assert lines[1]["event"] == "forcerenew.sent"
    assert lines[1]["fields"] == {"client": "hw:01:02", "attempt": 2}
    assert lines[2]["event"] == "log"
    assert lines[2]["fields"] == {"message": "plain text"}


@pytest.mark.parametrize(
    "fields",
    [
        {"key": b"\x01\x02"},
        {"psk_key": "00ff"},
        {"secret": bytearray(b"x")},
        {"token": "abc"},
        {"ce": {"name": "a", "key": b"k"}},
        {"items": [{"auth_token": b"t"}]},
    ],
)
def test_the_redaction_guard_refuses_key_material(fields: dict[str, object]) -> None:
    with pytest.raises(SecretFieldError):
        check_fields(fields)
    logger = logging.getLogger("test.redaction")
    with pytest.raises(SecretFieldError):
        log_event(logger, Event("x", tuple(fields.items())))
    # A record that reaches the formatter some other way is replaced, not written.
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.ceautoconf_event = "x"
    record.ceautoconf_fields = fields
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "log.redacted"
    assert set(line["fields"]) == {"refused_event", "field"}


def test_the_redaction_guard_allows_ids_and_flags() -> None:
    check_fields({"secret_id": 7, "key_set": True, "has_key": False, "token_file": None, "client": "hw:01"})


def test_local_manager_applies_writes_to_its_store() -> None:
    store = MemoryStore()
    engine = ServerEngine(config())
    manager = LocalManager(engine, store, lambda: 1_800_000_000.0)
    asyncio.run(manager.manage(lambda now: engine.put_vpn(VpnRecord(3, "x"), now)))
    assert store.load().vpns[3].name == "x"
    assert store.commits == 1


def test_with_the_real_driver_a_change_is_committed_before_the_answer() -> None:
    """ServerDriver is a Manager: its manage() goes through the group commit (in its thread)."""
    from dhcp_server.api import ApiServer, Manager  # noqa: PLC0415
    from dhcp_server.driver import DriverConfig, ServerDriver  # noqa: PLC0415

    class SlowStore(MemoryStore):
        def commit(self, writes: Sequence[Write]) -> None:
            time.sleep(0.05)  # an fsync's worth: the answer must wait for it
            super().commit(writes)

    async def main() -> None:
        store = SlowStore()
        engine = ServerEngine(config())
        driver = ServerDriver(engine, store, DriverConfig(address="127.0.0.1", port=0))
        manager: Manager = driver
        await driver.start()
        server = ApiServer(manager, TOKEN.encode(), host="127.0.0.1", port=0)
        await server.start()
        try:

            def put() -> tuple[int, int, bool, bool]:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                body = json.dumps({"hw": MAC.hex(), "secret_id": 5, "key": KEY.hex()})
                headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
                conn.request("PUT", "/v1/vpns/3", json.dumps({"name": "x"}), headers)
                first = conn.getresponse()
                first.read()
                conn.request("PUT", "/v1/ces/ce-9", body, headers)
                second = conn.getresponse()
                loaded = store.load()  # at the moment the answer arrived
                second.read()
                conn.close()
                return first.status, second.status, 3 in loaded.vpns, loaded.secrets.get(5) == KEY

            assert await asyncio.to_thread(put) == (201, 201, True, True)
            assert driver.counters["commits"] >= 2
        finally:
            await server.close()
            await driver.stop()

    asyncio.run(main())


def test_start_api_reads_the_token_file(tmp_path: Path) -> None:
    from dhcp_server.api import start_api  # noqa: PLC0415

    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)

    async def main() -> tuple[int, int]:
        manager = LocalManager(ServerEngine(config()), MemoryStore(), lambda: 1_800_000_000.0)
        server = await start_api(manager, host="127.0.0.1", port=0, token_file=token_file)
        try:

            def get(token: str) -> int:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/v1/status", headers={"Authorization": f"Bearer {token}"})
                status = conn.getresponse().status
                conn.close()
                return status

            return await asyncio.to_thread(get, TOKEN), await asyncio.to_thread(get, TOKEN[:-1])
        finally:
            await server.close()

    assert asyncio.run(main()) == (200, 401)
    token_file.chmod(0o644)
    with pytest.raises(TokenFileError):
        asyncio.run(start_api(LocalManager(ServerEngine(config()), MemoryStore()), token_file=token_file))
