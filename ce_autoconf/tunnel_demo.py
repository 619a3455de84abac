"""The tunnel scenario (issue 5): four CEs running ``ce-autoconf client --runtime`` behind our server.

Needs a kernel with ipip and ESP (Debian's; this module runs directly in namespaces there, or inside
the micro-VM of tests/vm where the host kernel lacks them: ``python -m ce_autoconf.tunnel_demo``).

A provider bridge with ``ce-autoconf server run``; CE1..CE3 created through the management CLI in
VPN 100, each with its RFC 3118 key, a customer LAN namespace behind it (10.N.0.0/24) and the
VPN's ESP secret. Steps, each checked (a failed check raises :class:`DemoError`):

1. every pair of CE1..CE3 has its tunnel (ipip + ESP transport SAs + policies) and hears the other;
2. a host behind CE1 pings a host behind CE3; a capture on the provider bridge shows only ESP
   between CE addresses, never an inner packet;
3. CE4 added through the CLI: FORCERENEW, re-INFORM, every CE has its tunnel to CE4 (timed);
4. CE2 deleted: its tunnels are torn down at every other CE;
5. a path blocked (a blackhole route at CE4 towards CE3): CE3 reports the tunnel dead, repairs with
   backoff, raises the alarm; unblocked: alive again;
6. CE1's runtime stopped, one of its SAs and one of its links deleted by hand, restarted: what was
   right is untouched (same interface index, no "up" for it), what was wrong is repaired;
7. a CE that never answers (created with a static address nobody has): tunnels to it are built,
   it is reported dead, repaired with backoff, then the alarm.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, TypeVar

from ce_autoconf.demo import VPN_ID, DemoError, VpnLab
from ce_autoconf.netns import Lab, Namespace, Process, wait_for

__all__ = ["ADDRESSES", "main", "run_scenario"]

#: How much longer than on real hardware a step may take inside the micro-VM (TCG).
_PATIENCE: Final = 3.0 if os.environ.get("CE_VM") == "1" else 1.0

T = TypeVar("T")

#: Reserved provider addresses (the server's [[subnets.reservations]]), so that VPN routes can be configured.
ADDRESSES: Final = {f"ce{i}": IPv4Address(f"10.66.0.{10 + i}") for i in range(1, 5)}
GHOST: Final = IPv4Address("10.66.0.99")  # a static-address CE that does not exist
LAN: Final = {name: f"10.{i}.0" for i, name in enumerate(ADDRESSES, start=1)}

RUNTIME_TOML: Final = """\
state_dir = "runtime"
[timing]
debounce = 0.3
interval = 30.0
hello_interval = 1.0
dead_after = 6.0
min_retry = 2.0
max_retry = 8.0
alarm_after = 3

[[vpn]]
id = {vpn}
secret_file = "../vpn{vpn}.key"
routes = [{routes}]
"""


class Say:
    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.start:6.1f}s] {text}")


class TunnelLab:
    """VpnLab's server and CLI, CEs running client + runtime, LAN hosts, and what to look at."""

    def __init__(self, lab: Lab, say: Say) -> None:
        self.lab = lab
        self.say = say
        self.vpn = VpnLab(lab, python=sys.executable)
        reservations = "".join(
            f'\n[[subnets.reservations]]\nhw = "{self.vpn.ces[n].mac}"\naddress = "{a}"\n'
            for n, a in ADDRESSES.items()
        )
        self.vpn.config.write_text(self.vpn.config.read_text() + reservations)
        secret = self.lab.workdir / f"vpn{VPN_ID}.key"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        self.nodes: dict[str, Process] = {}
        self.lans: dict[str, Namespace] = {}

    def ns(self, name: str) -> Namespace:
        ns = self.vpn.ces[name].ns
        assert ns is not None
        return ns

    def start(self, name: str) -> Process:
        """CE ``name`` (namespace, LAN, runtime config) and ``ce-autoconf client --runtime``."""
        ce = self.vpn.ces[name]
        if ce.ns is None:
            ce.ns = self.lab.namespace(name)
            self.lab.attach(self.vpn.switch, ce.ns)
            ce.ns.ip("link", "set", "eth0", "down")
            ce.ns.ip("link", "set", "eth0", "address", ce.mac)
            ce.ns.ip("link", "set", "eth0", "up")
            # A router: forwards; no reverse-path filtering: hellos arrive on the tunnel links from
            # the peer's provider address (strict filtering drops them), and the DHCP OFFER comes
            # before the CE has any route (loose filtering drops it).
            ce.ns.run(
                "sh",
                "-c",
                "echo 1 >/proc/sys/net/ipv4/ip_forward; echo 0 >/proc/sys/net/ipv4/conf/all/rp_filter; "
                "echo 0 >/proc/sys/net/ipv4/conf/default/rp_filter",
            )
            lan = self.lab.namespace(f"lan{name[2:]}")
            prefix = LAN[name]
            self.lab.link(ce.ns, lan, "lan0", "eth0", a_address=f"{prefix}.1/24", b_address=f"{prefix}.2/24")
            lan.ip("route", "add", "default", "via", f"{prefix}.1")
            self.lans[name] = lan
        routes = ", ".join(
            f'{{ prefix = "{LAN[other]}.0/24", peer = "{address}" }}'
            for other, address in ADDRESSES.items()
            if other != name
        )
        (ce.workdir / "runtime.toml").write_text(RUNTIME_TOML.format(vpn=VPN_ID, routes=routes))
        (ce.workdir / "client.toml").write_text(
            f'interface = "eth0"\nhardware_address = "{ce.mac}"\nstate_file = "state.json"\n'
            f'secret_id = {ce.secret_id}\nkey_file = "{name}.key"\nhostname = "{name}"\n'
            "apply_address = true\ndefault_route = false\n[timing]\ninitial_delay = 0.0\n"
        )
        argv = self.vpn.command(
            "client",
            "--config",
            str(ce.workdir / "client.toml"),
            "--runtime",
            str(ce.workdir / "runtime.toml"),
        )
        process = ce.ns.start(*argv, name=f"node-{name}")
        ce.client = process  # Ce.events()/address()/peers() read this log
        self.nodes[name] = process
        return process

    # -- what to look at --------------------------------------------------------------------

    def tunnels(self, name: str) -> dict[IPv4Address, int]:
        """The kernel's ipip links of CE ``name`` that are ours: remote -> interface index."""
        out = self.ns(name).ip("-d", "-o", "link", "show", "type", "ipip")
        found = {}
        for line in out.splitlines():
            remote = re.search(r" remote (\d+\.\d+\.\d+\.\d+)", line)
            if remote and re.match(r"\d+: ce[0-9a-f]{8}[@:]", line):
                found[IPv4Address(remote.group(1))] = int(line.split(":", 1)[0])
        return found

    def sas(self, name: str) -> str:
        return self.ns(name).ip("xfrm", "state")

    def status(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(
                (self.vpn.ces[name].workdir / "runtime" / "status.json").read_text()
            )
        except (OSError, ValueError):
            return {}
        return data

    def health(self, name: str) -> dict[IPv4Address, str]:
        return {IPv4Address(p): t["health"] for p, t in self.status(name).get("tunnels", {}).items()}

    def events(self, name: str, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            e for e in self.vpn.ces[name].events() if e.get("event") == kind and e.get("time", 0) >= since
        ]

    def ping(self, src: str, dst: str, count: int = 3) -> bool:
        done = self.lans[src].run(
            "ping", "-c", str(count), "-i", "0.3", "-W", "3", f"{LAN[dst]}.2", check=False, timeout=30
        )
        return done.returncode == 0

    def wait(self, condition: Callable[[], T | None], timeout: float, what: str) -> T:
        # Under software emulation (the micro-VM, CE_VM=1) on a loaded machine everything
        # runs several times slower; a deadline is an upper bound, so stretching it there
        # costs nothing when things work.
        timeout *= _PATIENCE
        try:
            return wait_for(condition, timeout, interval=0.2, what=what)
        except TimeoutError:
            procs = sorted(self.nodes.items())
            if self.vpn.server is not None:
                procs.append(("server", self.vpn.server))
            logs = "\n".join(f"--- {n}\n" + "\n".join(p.log().splitlines()[-25:]) for n, p in procs)
            raise DemoError(f"no {what} within {timeout:.0f} s\n{logs}") from None

    def meshed(self, members: list[str]) -> bool:
        """Every member has a tunnel to every other member, and hears it."""
        for name in members:
            want = {ADDRESSES[o] for o in members if o != name}
            if not want <= set(self.tunnels(name)):
                return False
            health = self.health(name)
            if any(health.get(p) != "alive" for p in want):
                return False
        return True


def run_scenario(lab: Lab, say: Say, check: Callable[[str, bool, str], None]) -> None:
    t = TunnelLab(lab, say)
    vpn = t.vpn
    vpn.start_server()
    vpn.add_vpn()
    first = ["ce1", "ce2", "ce3"]
    for name in first:
        vpn.add_ce(name)
    say("server up; VPN 100 and CE1..CE3 created with the management CLI (addresses reserved)")
    started = time.monotonic()
    for name in first:
        t.start(name)
    say("CE1..CE3 started: ce-autoconf client --config client.toml --runtime runtime.toml")
    t.wait(lambda: t.meshed(first), 90, "tunnels between CE1, CE2, CE3")
    check(
        "mesh3",
        True,
        f"every pair of CE1..CE3 has its tunnel and hears the other ({time.monotonic() - started:.1f} s)",
    )
    for name in first:
        say(f"  {name} ({ADDRESSES[name]}): tunnels to {', '.join(str(p) for p in sorted(t.tunnels(name)))}")

    capture = lab.capture(vpn.switch, dev="br0", name="provider", filt="ip")
    ok = t.ping("ce1", "ce3")
    check("ping13", ok, "a host behind CE1 (10.1.0.2) pings a host behind CE3 (10.3.0.2)")
    time.sleep(0.5)
    path = capture.stop()
    done = vpn.switch.run("tcpdump", "-n", "-r", str(path), check=False)
    lines = done.stdout.splitlines()
    ces = {str(a) for a in ADDRESSES.values()}
    between = [x for x in lines if len(set(re.findall(r"10\.66\.0\.\d+", x)) & ces) == 2]
    esp = [x for x in between if "ESP(spi=" in x]
    leaks = [x for x in lines if re.search(r"\b10\.[1-4]\.0\.\d+\b", x) or "ICMP" in x]
    check(
        "capture",
        bool(esp) and len(esp) == len(between) and not leaks,
        f"provider bridge: {len(esp)} ESP packets between CEs, {len(between) - len(esp)} other, "
        f"{len(leaks)} with an inner address",
    )

    # CE4 joins.
    added = time.monotonic()
    vpn.add_ce("ce4")
    t.start("ce4")
    members = [*first, "ce4"]
    t.wait(lambda: t.meshed(members), 90, "every CE's tunnel to CE4")
    check("ce4", True, f"CE4 added (CLI) -> FORCERENEW -> INFORM: all 6 tunnels up and alive in "
          f"{time.monotonic() - added:.1f} s")  # fmt: skip
    check("ping14", t.ping("ce1", "ce4", 2), "a host behind CE1 pings a host behind CE4")

    # CE2 leaves.
    removed = time.monotonic()
    vpn.delete_ce("ce2")
    members = ["ce1", "ce3", "ce4"]
    t.wait(lambda: all(ADDRESSES["ce2"] not in t.tunnels(n) for n in members), 60, "CE2's tunnels torn down")
    check(
        "ce2gone",
        True,
        f"CE2 deleted: its tunnels torn down at CE1, CE3, CE4 in {time.monotonic() - removed:.1f} s",
    )
    t.nodes["ce2"].stop()

    # Liveness: block CE4 -> CE3 (a blackhole route at CE4): CE3 hears nothing from CE4.
    blocked = time.time()
    t.ns("ce4").ip("route", "add", "blackhole", f"{ADDRESSES['ce3']}/32")
    t.wait(lambda: t.events("ce3", "TunnelAlarm", blocked), 60, "CE3's alarm for the blocked tunnel")
    dead = t.events("ce3", "TunnelDead", blocked)
    check(
        "dead",
        str(ADDRESSES["ce4"]) in [e["peer"] for e in dead]
        and {e["peer"] for e in t.events("ce3", "TunnelAlarm", blocked)} == {str(ADDRESSES["ce4"])},
        f"path CE4->CE3 blocked: CE3 reported dead: {sorted(e['peer'] for e in dead)}, the first after "
        f"{(dead[0]['time'] - blocked) if dead else -1:.1f} s, repaired with backoff, alarm after "
        f"{t.events('ce3', 'TunnelAlarm', blocked)[0]['time'] - blocked:.1f} s",
    )
    unblocked = time.time()
    t.ns("ce4").ip("route", "del", "blackhole", f"{ADDRESSES['ce3']}/32")
    t.wait(lambda: t.events("ce3", "TunnelAlive", unblocked), 30, "CE3 hearing CE4 again")
    check(
        "alive", True, f"unblocked: CE3 reports the tunnel to CE4 alive after {time.time() - unblocked:.1f} s"
    )

    # Restart CE1's runtime after damage: what was right stays, what was wrong is repaired.
    before = t.tunnels("ce1")
    t.nodes["ce1"].stop()
    match = re.search(
        rf"src {ADDRESSES['ce1']} dst {ADDRESSES['ce3']}\s+proto esp spi (0x[0-9a-f]+)", t.sas("ce1")
    )
    if match is None:
        raise DemoError(f"no SA from CE1 to CE3:\n{t.sas('ce1')}")
    t.ns("ce1").ip("xfrm", "state", "delete", "src", str(ADDRESSES["ce1"]), "dst", str(ADDRESSES["ce3"]),
                   "proto", "esp", "spi", match.group(1))  # fmt: skip
    t.ns("ce1").ip("link", "del", f"ce{ADDRESSES['ce4'].packed.hex()}")
    restarted = time.time()
    t.start("ce1")
    t.wait(lambda: t.meshed(members), 60, "CE1 repaired after its restart")
    after = t.tunnels("ce1")
    ups = {e["peer"] for e in t.events("ce1", "TunnelUp", restarted)}
    applied = sum(e["applied"] for e in t.events("ce1", "Reconciled", restarted))
    new_spi = re.search(
        rf"src {ADDRESSES['ce1']} dst {ADDRESSES['ce3']}\s+proto esp spi (0x[0-9a-f]+)", t.sas("ce1")
    )
    check(
        "restart",
        after[ADDRESSES["ce3"]] == before[ADDRESSES["ce3"]]
        and ups == {str(ADDRESSES["ce4"])}
        and new_spi is not None
        and new_spi.group(1) != match.group(1),
        f"CE1 restarted after an SA and a link were deleted: {applied} operations applied, link to CE3 "
        f"kept (index {after[ADDRESSES['ce3']]}), SA to CE3 re-added under a new SPI "
        f"({match.group(1)} -> {new_spi.group(1) if new_spi else '?'}), link to CE4 re-created",
    )
    check("ping13again", t.ping("ce1", "ce3", 2), "CE1's LAN reaches CE3's LAN again")

    # A CE that never answers.
    ghosted = time.time()
    vpn.manage(
        "ce",
        "add",
        "ghost",
        "--hw",
        "02:00:00:66:00:99",
        "--static-address",
        str(GHOST),
        "--vpn",
        str(VPN_ID),
    )
    t.wait(
        lambda: all(t.events(n, "TunnelAlarm", ghosted) for n in members), 90, "the alarm for the silent CE"
    )
    lines = []
    for name in members:
        dead_at = t.events(name, "TunnelDead", ghosted)
        alarm_at = t.events(name, "TunnelAlarm", ghosted)
        up_at = [e for e in t.events(name, "TunnelUp", ghosted) if e["peer"] == str(GHOST)]
        lines.append(
            f"{name}: up {up_at[0]['time'] - ghosted:.1f} s, dead {dead_at[0]['time'] - ghosted:.1f} s, "
            f"alarm {alarm_at[0]['time'] - ghosted:.1f} s"
            if up_at and dead_at
            else f"{name}: ?"
        )
    repairs = t.status("ce1").get("counters", {}).get("repairs", 0)
    check(
        "ghost",
        all(e["peer"] == str(GHOST) for n in members for e in t.events(n, "TunnelAlarm", ghosted)),
        f"a silent CE ({GHOST}, static address): tunnels built, reported dead, repaired with backoff, alarm "
        f"({'; '.join(lines)}; CE1 repairs so far {repairs})",
    )
    status = vpn.stop_server()
    for name in members:
        t.nodes[name].stop()
    say(f"server stopped (exit {status}); CE runtimes stopped, their tunnels left in place (permanent)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ce_autoconf.tunnel_demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    say = Say()
    failures: list[str] = []

    def check(name: str, ok: bool, text: str) -> None:
        say(f"{'ok  ' if ok else 'FAIL'} {text}")
        print(f"CHECK {name} {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            failures.append(name)

    workdir = Path(tempfile.mkdtemp(prefix="ce-autoconf-tunnels-"))
    lab = Lab(workdir, prefix=f"cetun{os.getpid()}")
    try:
        run_scenario(lab, say, check)
    except DemoError as exc:
        say(f"FAIL {exc}")
        failures.append("error")
    finally:
        with contextlib.suppress(RuntimeError):
            lab.close()
        if not args.keep:
            import shutil  # noqa: PLC0415

            shutil.rmtree(workdir, ignore_errors=True)
    print(f"SCENARIO {'FAILED ' + ','.join(failures) if failures else 'PASSED'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
