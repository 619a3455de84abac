"""Our PPP sessions against pppd 2.4.9 on a pty -- run INSIDE the micro-VM by ``test_pppd_vm.py``.

pppd needs kernel PPP (``/dev/ppp``), which only the VM's Debian kernel has. This module is the
guest side: ``python pppd_peer.py WORKDIR`` runs every scenario in one Python process (start-up
dominates the run time) and prints one JSON object per scenario, one per line, on stdout. Each
object carries our events, pppd's exit status, its debug log and its ``record`` capture (pppdump
format, base64), so the host can check them with tshark and keep them as vectors.

Scenarios:

``ce_vs_pppd``  our CE, pppd the NAS: address and DNS by Nak, VPN-IP-Addresses rejected, an ICMP echo
                request from the CE to pppd's address answered by the guest kernel through ppp0, then a
                clean LCP terminate from our side.
``pppd_vs_nas`` pppd the client (``noipdefault``), our NAS: pppd gets its address and DNS, our VPN
                option is not forced on it; the guest kernel pings our NAS's address through ppp0 and
                our NAS answers the echo at the IP level; then our NAS terminates.

The host's ``/etc/ppp`` (``auth``, ``crtscts``, ip-up scripts) must be hidden by a tmpfs before
this runs; ``nolock nocrtscts local noauth`` are passed explicitly as well.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final

from ipcp.driver import run_ppp
from ipcp.engine import NegotiationConfig
from ipcp.events import (
    AddressLearned,
    IpDatagram,
    LayerUp,
    PeerConfigured,
    PppEvent,
)
from ipcp.frame import Protocol
from ipcp.roles import CeIpcpPolicy, NasConfig, NasIpcpPolicy
from ipcp.session import PppSession

A = IPv4Address
PPPD: Final = "/usr/sbin/pppd"
NAS_ADDRESS, CE_ADDRESS = A("100.64.0.1"), A("100.64.0.2")
DNS1, DNS2 = A("192.0.2.53"), A("192.0.2.54")
PEERS: Final = {7: [A("10.9.0.1"), A("10.9.0.2")]}
COMMON: Final = ("debug", "nodetach", "noccp", "noipv6", "nolock", "nocrtscts", "local", "noauth")
FAST: Final = NegotiationConfig(restart_interval=1.0)
ICMP_ID: Final = 0xCE00


# -- a few IPv4/ICMP octets, enough to ping and to answer a ping ----------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(source: IPv4Address, destination: IPv4Address, payload: bytes, protocol: int = 1) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0, 64, protocol, 0,
                         source.packed, destination.packed)  # fmt: skip
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def icmp_echo(kind: int, identifier: int, sequence: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, identifier, sequence) + data
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def parse_icmp(datagram: bytes) -> tuple[IPv4Address, IPv4Address, int, int, int] | None:
    """(source, destination, ICMP type, identifier, sequence) of an ICMP echo datagram, else None."""
    if len(datagram) < 28 or datagram[0] >> 4 != 4 or datagram[9] != 1:
        return None
    ihl = (datagram[0] & 0x0F) * 4
    kind, _code, _sum, identifier, sequence = struct.unpack_from("!BBHHH", datagram, ihl)
    return A(datagram[12:16]), A(datagram[16:20]), kind, identifier, sequence


def echo_reply_to(datagram: bytes) -> bytes | None:
    """The echo reply our side sends for an echo request addressed to it (None for anything else)."""
    parsed = parse_icmp(datagram)
    if parsed is None or parsed[2] != 8:
        return None
    source, destination, _kind, identifier, sequence = parsed
    ihl = (datagram[0] & 0x0F) * 4
    return ipv4(destination, source, icmp_echo(0, identifier, sequence, datagram[ihl + 8 :]))


# -- running pppd on the other end of a pty -------------------------------------------------------


def describe(event: PppEvent) -> dict[str, Any]:
    """An event as JSON: its class name and fields (addresses as text, sets sorted)."""

    def plain(value: object) -> object:
        if isinstance(value, IPv4Address):
            return str(value)
        if isinstance(value, frozenset | set):
            return sorted(str(v) for v in value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, bytes):
            return value.hex()
        return value

    fields: dict[str, object] = asdict(event) if is_dataclass(event) else {}
    return {"event": type(event).__name__, **{k: plain(v) for k, v in fields.items()}}


async def against_pppd(
    name: str,
    work: Path,
    session: PppSession,
    pppd_options: list[str],
    on_event: Callable[[PppEvent, asyncio.Queue[bytes], asyncio.Event], None],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Start pppd on the slave side of a pty, run ``session`` on the master, collect everything."""
    log, record = work / f"{name}.log", work / f"{name}.pppdump"
    master, slave = os.openpty()
    events: list[PppEvent] = []
    stop = asyncio.Event()
    outgoing: asyncio.Queue[bytes] = asyncio.Queue()
    started = time.monotonic()

    def seen(event: PppEvent) -> None:
        events.append(event)
        on_event(event, outgoing, stop)

    argv = [PPPD, os.ttyname(slave), *COMMON, "logfile", str(log), "record", str(record), *pppd_options]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    returncode: int | None = None
    error = None
    try:
        await asyncio.wait_for(run_ppp(session, master, seen, stop=stop, outgoing=outgoing), timeout)
        returncode = await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        error = "timeout"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
        os.close(slave)
    output = (await proc.stdout.read()).decode(errors="replace") if proc.stdout else ""
    return {
        "scenario": name,
        "seconds": round(time.monotonic() - started, 3),
        "error": error,
        "pppd_rc": returncode,
        "pppd_output": output,
        "log": log.read_text(errors="replace") if log.exists() else "",
        "record": base64.b64encode(record.read_bytes()).decode() if record.exists() else "",
        "events": [describe(e) for e in events],
        "finished": session.finished,
        "lcp_state": session.lcp.state.name,
        "counters": asdict(session.counters),
        "ipcp_malformed": session.ipcp.counters.malformed,
    }


async def ce_vs_pppd(work: Path) -> dict[str, Any]:
    """Our CE against pppd as the NAS; the CE pings pppd's address until the guest kernel answers."""
    rng = random.Random(6)
    session = PppSession(CeIpcpPolicy(), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    state: dict[str, Any] = {"local": None, "peer": None, "sent": 0, "replies": []}
    pinger: list[asyncio.Task[None]] = []

    async def ping(outgoing: asyncio.Queue[bytes], stop: asyncio.Event) -> None:
        # pppd brings ppp0 up and sets NPMODE_PASS right after its IPCP opens: retry for a while.
        for sequence in range(1, 21):
            payload = icmp_echo(8, ICMP_ID, sequence, b"ce-autoconf over pppd")
            state["sent"] += 1
            await outgoing.put(ipv4(state["local"], state["peer"], payload))
            await asyncio.sleep(0.25)
            if state["replies"]:
                break
        stop.set()

    def on_event(event: PppEvent, outgoing: asyncio.Queue[bytes], stop: asyncio.Event) -> None:
        if isinstance(event, AddressLearned):
            state["local"], state["peer"] = event.local, event.peer
        elif event == LayerUp(Protocol.IPCP) and not pinger:
            pinger.append(asyncio.ensure_future(ping(outgoing, stop)))
        elif isinstance(event, IpDatagram):
            parsed = parse_icmp(event.datagram)
            if parsed is not None and parsed[2] == 0 and parsed[3] == ICMP_ID:
                state["replies"].append([str(parsed[0]), str(parsed[1]), parsed[4]])

    options = [f"{NAS_ADDRESS}:{CE_ADDRESS}", "ms-dns", str(DNS1), "ms-dns", str(DNS2)]
    result = await against_pppd("ce_vs_pppd", work, session, options, on_event)
    for task in pinger:
        task.cancel()
    result["pings_sent"] = state["sent"]
    result["echo_replies"] = state["replies"]
    return result


async def pppd_vs_nas(work: Path) -> dict[str, Any]:
    """pppd as the client of our NAS; the guest kernel pings our NAS through ppp0, our NAS answers."""
    rng = random.Random(7)
    config = NasConfig(NAS_ADDRESS, CE_ADDRESS, DNS1, DNS2, vpn_peers=lambda _ce: PEERS)
    session = PppSession(NasIpcpPolicy(config), random32=lambda: rng.getrandbits(32), negotiation=FAST)
    state: dict[str, Any] = {"answered": 0, "ping": None}
    tasks: list[asyncio.Task[None]] = []

    async def ping_from_kernel(stop: asyncio.Event) -> None:
        # pppd configures ppp0 right after its IPCP opens; give it a few tries.
        for _attempt in range(10):
            proc = await asyncio.create_subprocess_exec(
                "ping", "-n", "-c", "1", "-W", "1", str(NAS_ADDRESS),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            state["ping"] = [proc.returncode, out.decode(errors="replace")]
            if proc.returncode == 0:
                break
            await asyncio.sleep(0.2)
        stop.set()

    def on_event(event: PppEvent, _outgoing: asyncio.Queue[bytes], stop: asyncio.Event) -> None:
        if isinstance(event, PeerConfigured) and not tasks:
            tasks.append(asyncio.ensure_future(ping_from_kernel(stop)))
        elif isinstance(event, IpDatagram):
            reply = echo_reply_to(event.datagram)
            if reply is not None:
                state["answered"] += 1
                session.send_datagram(reply)  # the driver flushes what on_event queued

    options = ["noipdefault", "ipcp-accept-local", "ipcp-accept-remote", "usepeerdns"]
    result = await against_pppd("pppd_vs_nas", work, session, options, on_event)
    for task in tasks:
        task.cancel()
    result["echo_answered"] = state["answered"]
    result["kernel_ping"] = state["ping"]
    return result


async def main(work: Path) -> None:
    for scenario in (ce_vs_pppd, pppd_vs_nas):
        result = await scenario(work)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
