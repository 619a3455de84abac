"""Prometheus metrics: the text is what prometheus_client's own parser reads, and the numbers
are the engine's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from api_helpers import TOKEN, ApiThread
from engine_helpers import Client, Harness, config
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dhcp_server.actions import VpnWrite, Write
from dhcp_server.engine import ServerEngine
from dhcp_server.metrics import CONTENT_TYPE, TimedStore, render_metrics
from dhcp_server.model import AuthPolicy, CeRecord, QuarantinePolicy, VpnRecord
from dhcp_server.store import MemoryStore
from options import MessageType

NOW = 1_800_000_000.0


def parse(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """family name -> (type, samples), through the reference parser."""
    return {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(text)}


def value(families: dict[str, tuple[str, list[Sample]]], sample: str, **labels: str) -> float:
    for _, samples in families.values():
        for s in samples:
            if s.name == sample and s.labels == labels:
                return s.value
    raise KeyError((sample, labels))


def test_a_fresh_engine_exposes_every_family_with_zeros() -> None:
    text = render_metrics(ServerEngine(config()), NOW)
    assert text.endswith("\n")
    families = parse(text)
    expected = {
        "ceautoconf_messages_received": "counter",
        "ceautoconf_messages_sent": "counter",
        "ceautoconf_messages_dropped": "counter",
        "ceautoconf_forcerenew": "counter",
        "ceautoconf_quarantine_started": "counter",
        "ceautoconf_engine_events": "counter",
        "ceautoconf_leases": "gauge",
        "ceautoconf_quarantined_clients": "gauge",
        "ceautoconf_forcerenew_outstanding": "gauge",
        "ceautoconf_vpns": "gauge",
        "ceautoconf_ces": "gauge",
    }
    assert {name: kind for name, (kind, _) in families.items()} == expected
    for kind in ("DHCPDISCOVER", "DHCPREQUEST", "DHCPDECLINE", "DHCPRELEASE", "DHCPINFORM"):
        assert value(families, "ceautoconf_messages_received_total", type=kind) == 0
    for state in ("bound", "released", "expired", "declined"):
        assert value(families, "ceautoconf_leases", state=state) == 0
    assert value(families, "ceautoconf_forcerenew_total", outcome="gave_up") == 0


def test_the_numbers_are_the_engines() -> None:
    cfg = config(AuthPolicy.OFF, quarantine=QuarantinePolicy(max_messages=4, window=60, duration=600))
    engine = ServerEngine(cfg)
    h = Harness(engine, NOW)
    a, b = Client(bytes.fromhex("020000000001")), Client(bytes.fromhex("020000000002"))
    h.bind(a)
    h.bind(b)
    h.send(b.message(MessageType.DHCPRELEASE, ciaddr=b.address))
    h.send(b"\x01" * 20)  # malformed
    flooder = Client(bytes.fromhex("020000000099"))
    for _ in range(6):
        h.send(flooder.message(MessageType.DHCPDISCOVER))
    engine.directory.put_vpn(VpnRecord(7, "corp"))
    engine.directory.put_ce(CeRecord("ce-1", a.key_id, None, frozenset({7})))

    families = parse(render_metrics(engine, NOW))
    counters = engine.counters
    assert (
        value(families, "ceautoconf_messages_received_total", type="DHCPDISCOVER")
        == counters["received:DHCPDISCOVER"]
    )
    assert value(families, "ceautoconf_messages_received_total", type="DHCPRELEASE") == 1
    assert value(families, "ceautoconf_messages_sent_total", type="DHCPACK") == 2
    assert value(families, "ceautoconf_messages_dropped_total", reason="malformed") == 1
    assert value(families, "ceautoconf_messages_dropped_total", reason="rate_limited") == 2
    assert value(families, "ceautoconf_quarantine_started_total") == 1
    assert value(families, "ceautoconf_quarantined_clients") == 1
    assert value(families, "ceautoconf_engine_events_total", event="lease:bound") == counters["lease:bound"]
    assert value(families, "ceautoconf_leases", state="bound") == 1
    assert value(families, "ceautoconf_leases", state="released") == 1
    assert (value(families, "ceautoconf_vpns"), value(families, "ceautoconf_ces")) == (1, 1)
    # Later, the bound lease has run out: it is counted as expired.
    later = parse(render_metrics(engine, NOW + 10_000))
    assert value(later, "ceautoconf_leases", state="bound") == 0
    assert value(later, "ceautoconf_leases", state="expired") == 1
    assert value(later, "ceautoconf_quarantined_clients") == 0


def test_label_values_are_escaped() -> None:
    engine = ServerEngine(config())
    odd = 'we"ird\\reason\nwith a newline'
    engine.counters[f"dropped:{odd}"] += 3
    families = parse(render_metrics(engine, NOW, driver_counters={"commits": 5}))
    assert value(families, "ceautoconf_messages_dropped_total", reason=odd) == 3
    assert value(families, "ceautoconf_driver_total", what="commits") == 5


def test_forcerenew_outcomes_and_outstanding() -> None:
    engine = ServerEngine(config(AuthPolicy.OFF))
    h = Harness(engine, NOW)
    client = Client(bytes.fromhex("020000000001"), nonce_capable=True)
    h.bind(client)
    engine.directory.put_vpn(VpnRecord(7, "corp"))
    engine.directory.put_ce(CeRecord("ce-1", client.key_id, None, frozenset({7})))
    engine.forcerenew_ce("ce-1", NOW)
    engine.on_timer(NOW)
    families = parse(render_metrics(engine, NOW))
    assert value(families, "ceautoconf_forcerenew_outstanding") == 1
    assert (
        value(families, "ceautoconf_forcerenew_total", outcome="sent")
        == engine.counters["sent:DHCPFORCERENEW"]
    )
    assert value(families, "ceautoconf_forcerenew_total", outcome="sent") == 1
    assert value(families, "ceautoconf_messages_sent_total", type="DHCPFORCERENEW") == 1


class Ticks:
    def __init__(self, steps: Sequence[float]) -> None:
        self.times = iter(steps)

    def __call__(self) -> float:
        return next(self.times)


def test_timed_store_histogram() -> None:
    inner = MemoryStore()
    # Three commits taking 0.3 ms, 4 ms and 3 s.
    store = TimedStore(inner, clock=Ticks([0.0, 0.0003, 1.0, 1.004, 2.0, 5.0]))
    writes: list[Write] = [VpnWrite(VpnRecord(1, "a"))]
    for _ in range(3):
        store.commit(writes)
    assert inner.load().vpns[1].name == "a"
    families = parse(render_metrics(ServerEngine(config()), NOW, store=store))
    kind, samples = families["ceautoconf_store_commit_seconds"]
    assert kind == "histogram"
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    assert buckets["0.0005"] == 1
    assert buckets["0.005"] == 2
    assert buckets["2.5"] == 2
    assert buckets["+Inf"] == 3
    assert value(families, "ceautoconf_store_commit_seconds_count") == 3
    assert value(families, "ceautoconf_store_commit_seconds_sum") == pytest.approx(3.0043)
    assert value(families, "ceautoconf_store_commits_total") == 3
    assert value(families, "ceautoconf_store_writes_total") == 3


def test_timed_store_counts_failures() -> None:
    class Broken(MemoryStore):
        def commit(self, writes: Sequence[Write]) -> None:
            raise OSError("disk full")

    store = TimedStore(Broken())
    with pytest.raises(OSError, match="disk full"):
        store.commit([])
    families = parse(render_metrics(ServerEngine(config()), NOW, store=store))
    assert value(families, "ceautoconf_store_commit_failures_total") == 1
    assert value(families, "ceautoconf_store_commits_total") == 0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiThread]:
    server = ApiThread(tmp_path)
    try:
        yield server
    finally:
        server.close()


def test_metrics_endpoint(api: ApiThread) -> None:
    # The subnet requires authentication: a client without credentials is dropped, and counted.
    assert api.send(Client(bytes.fromhex("020000000001")).message(MessageType.DHCPDISCOVER)) == []
    reply = api.request("GET", "/metrics", token=None)
    assert reply.status == 200
    assert reply.headers["content-type"] == CONTENT_TYPE
    families = parse(reply.text)
    assert value(families, "ceautoconf_messages_received_total", type="DHCPDISCOVER") == 1
    assert value(families, "ceautoconf_driver_total", what="datagrams") == 1
    dropped = {s.labels["reason"]: s.value for s in families["ceautoconf_messages_dropped"][1]}
    assert sum(dropped.values()) == 1


def test_metrics_can_require_the_token(tmp_path: Path) -> None:
    api = ApiThread(tmp_path, metrics_require_token=True)
    try:
        assert api.request("GET", "/metrics", token=None).status == 401
        assert api.request("GET", "/metrics", token="wrong-token-0123456789").status == 401
        reply = api.request("GET", "/metrics", token=TOKEN)
        assert reply.status == 200
        assert "ceautoconf_leases" in parse(reply.text)
    finally:
        api.close()


def test_addresses_and_identities_are_not_labels() -> None:
    engine = ServerEngine(config(AuthPolicy.OFF))
    h = Harness(engine, NOW)
    client = Client(bytes.fromhex("02000000abcd"))
    h.bind(client)
    text = render_metrics(engine, NOW)
    assert str(client.address) not in text
    assert "02:00:00:00:ab:cd" not in text
    assert isinstance(client.address, IPv4Address)
