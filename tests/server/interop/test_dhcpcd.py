"""dhcpcd 9.4.1 (Debian's dhcpcd-base), the one deployed client with RFC 3118 delayed
authentication, RFC 6704 and authenticated FORCERENEW, against our server.

dhcpcd runs sandboxed as /work/shared/notes/dhcpcd-interop.md describes: in the client
namespace, in a private mount namespace with its own /run and /var/lib/dhcpcd (so it
never sees the host's state and starts with no saved lease or replay value), a hook
script that only logs, and an external timeout (the lab kills it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from netns import Process, wait_for

from dhcp_server.actions import Outcome
from dhcp_server.engine import ServerEngine
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey, LeaseState, VpnRecord

from .conftest import CLIENT_MAC, POOL, ServerLab, keep_capture, server_config

SECRET_ID = 0x1234
KEY = b"the-key"
CE_CLIENT = ClientKey.from_hardware(1, bytes.fromhex(CLIENT_MAC.replace(":", "")))

BASE_CONF = """\
allowinterfaces eth0
ipv4only
noipv4ll
noarp
nodelay
nodev
option subnet_mask, dhcp_lease_time, dhcp_server_identifier
"""
DELAYED_CONF = (
    BASE_CONF
    + """\
authprotocol delayed hmac-md5 monocounter
authtoken 0x00001234 "" forever "{key}"
"""
)
HOOK = """#!/bin/sh
# dhcpcd hook: log only; dhcpcd itself configures the address inside the client namespace.
echo "$reason ip=$new_ip_address" >> "{log}"
"""
SANDBOX = (
    "mount -t tmpfs tmpfs /run && mkdir -p /run/dhcpcd && "
    'mount --bind "$1" /var/lib/dhcpcd && shift && exec "$@"'
)


@dataclass
class Dhcpcd:
    process: Process
    events: Path

    def logged(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.events.read_text()) if self.events.exists() else None

    def debug(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.process.log())

    def wait_event(self, pattern: str, timeout: float = 25) -> re.Match[str]:
        try:
            return wait_for(lambda: self.logged(pattern), timeout, what=f"dhcpcd event {pattern!r}")
        except TimeoutError:
            raise AssertionError(f"no {pattern!r}; dhcpcd said:\n{self.process.log()[-4000:]}") from None


def start_dhcpcd(server_lab: ServerLab, tools: dict[str, str], conf_text: str, name: str) -> Dhcpcd:
    work = server_lab.workdir / name
    state = work / "state"
    state.mkdir(parents=True)
    conf = work / "dhcpcd.conf"
    conf.write_text(conf_text)
    events = work / "events.log"
    hook = work / "hook.sh"
    hook.write_text(HOOK.format(log=events))
    hook.chmod(0o755)
    process = server_lab.client_ns.start(
        tools["dhcpcd"],
        "-B",
        "-d",
        "-4",
        "-f",
        str(conf),
        "-c",
        str(hook),
        "eth0",
        name="dhcpcd",
        wrap=("unshare", "-m", "--propagation", "private", "sh", "-c", SANDBOX, "sandbox", str(state)),
    )
    return Dhcpcd(process, events)


def provision(auth_ce: bool) -> Callable[[ServerEngine], Outcome]:
    """VPN 7 with our CE "ce1" (the dhcpcd client), its key when ``auth_ce``."""

    def prepare(engine: ServerEngine) -> Outcome:
        now = 1.0
        out = engine.put_vpn(
            VpnRecord(7, "vpn7", auth=AuthPolicy.REQUIRED if auth_ce else AuthPolicy.OFF), now
        )
        ce = CeRecord("ce1", CE_CLIENT, SECRET_ID if auth_ce else None, frozenset({7}))
        out.extend(engine.put_ce(ce, KEY if auth_ce else None, now))
        return out

    return prepare


@pytest.fixture
def tools(require_tools: Callable[..., dict[str, str]]) -> dict[str, str]:
    return require_tools("dhcpcd", "tcpdump", "unshare")


def test_delayed_auth_binds_and_forcerenew_renews(server_lab: ServerLab, tools: dict[str, str]) -> None:
    server = server_lab.start_server(server_config(AuthPolicy.REQUIRED), provision(auth_ce=True))
    capture = server_lab.lab.capture(
        server_lab.server_ns, name="dhcpcd-delayed", filt="udp port 67 or udp port 68"
    )
    dhcpcd = start_dhcpcd(server_lab, tools, DELAYED_CONF.format(key=KEY.decode()), "delayed")
    bound = dhcpcd.wait_event(r"BOUND ip=(\S+)")
    address = IPv4Address(bound.group(1))
    assert address in POOL
    lease = server.store.load().leases[address]
    assert lease.client == CE_CLIENT and lease.state is LeaseState.BOUND
    assert server.engine.counters["dropped:auth_failed"] == 0
    assert not dhcpcd.debug("authentication failed|no authentication")

    # A second CE joins VPN 7: ce1 must be told (FORCERENEW, signed with its key).
    ce2 = CeRecord("ce2", ClientKey.from_hardware(1, bytes.fromhex("020000770033")), 0x99, frozenset({7}))
    server.manage(lambda now: server.engine.put_ce(ce2, b"other-key", now))
    dhcpcd.wait_event(r"RENEW ip=" + re.escape(str(address)))
    assert server.engine.counters["sent:DHCPFORCERENEW"] >= 1
    assert dhcpcd.debug(r"(?i)force ?renew")
    wait_for(lambda: not server.engine.forcerenews.outstanding(), 10, what="FORCERENEW answered")
    assert server.store.load().leases[address].updated > lease.updated
    keep_capture(capture.stop(), "dhcpcd-9.4.1-delayed-bind-forcerenew")


def test_wrong_key_never_binds(server_lab: ServerLab, tools: dict[str, str]) -> None:
    server = server_lab.start_server(server_config(AuthPolicy.REQUIRED), provision(auth_ce=True))
    dhcpcd = start_dhcpcd(server_lab, tools, DELAYED_CONF.format(key="not-the-key"), "wrongkey")
    wait_for(lambda: dhcpcd.debug("authentication failed"), 20, what="dhcpcd rejecting our OFFER")
    assert server.engine.counters["sent:DHCPOFFER"] >= 1
    assert not dhcpcd.logged("BOUND")
    assert server.engine.counters["lease:bound"] == 0
    assert not [lease for lease in server.store.load().leases.values() if lease.state is LeaseState.BOUND]


def test_rfc6704_nonce_forcerenew(server_lab: ServerLab, tools: dict[str, str]) -> None:
    server = server_lab.start_server(server_config(AuthPolicy.OPTIONAL), provision(auth_ce=False))
    capture = server_lab.lab.capture(
        server_lab.server_ns, name="dhcpcd-nonce", filt="udp port 67 or udp port 68"
    )
    dhcpcd = start_dhcpcd(server_lab, tools, BASE_CONF, "nonce")
    bound = dhcpcd.wait_event(r"BOUND ip=(\S+)")
    address = IPv4Address(bound.group(1))
    lease = server.store.load().leases[address]
    assert lease.nonce is not None and len(lease.nonce) == 16
    server.manage(lambda now: server.engine.forcerenew_ce("ce1", now))
    dhcpcd.wait_event(r"RENEW ip=" + re.escape(str(address)))
    assert not dhcpcd.debug("unauthenticated Force Renew")
    assert server.engine.counters["sent:DHCPFORCERENEW"] >= 1
    keep_capture(capture.stop(), "dhcpcd-9.4.1-rfc6704-nonce-forcerenew")
