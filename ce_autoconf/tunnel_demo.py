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
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Final, TypeVar

from ce_autoconf.demo import VPN_ID, DemoError, VpnLab
from ce_autoconf.netns import Lab, Namespace, Process, wait_for
from ce_runtime.model import Ownership

__all__ = ["ADDRESSES", "main", "run_scenario"]

#: How much longer than on real hardware a step may take inside the micro-VM (TCG).
_PATIENCE: Final = 3.0 if os.environ.get("CE_VM") == "1" else 1.0

T = TypeVar("T")

#: Reserved provider addresses (the server's [[subnets.reservations]]), so that VPN routes can be configured.
ADDRESSES: Final = {f"ce{i}": IPv4Address(f"10.66.0.{10 + i}") for i in range(1, 5)}
GHOST: Final = IPv4Address("10.66.0.99")
GUARD: Final = Ownership().guard_priority  # a static-address CE that does not exist
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
{ike}
[[vpn]]
id = {vpn}
{keying}
routes = [{routes}]
"""

#: IKE keying (ce_runtime.ike): our own charon per CE, stopped with the runtime (the lab is removed
#: afterwards); DPD and the responder's patience short for the demo.
IKE_SECTION: Final = """
[ike]
on_exit = "stop"
dpd_delay = 3
establish_timeout = 10
"""
#: In the IKE scenario CE1 and CE3 hold certificates (the pair CE1-CE3 authenticates with them);
#: every other pair uses the VPN's pre-shared key, except CE4, whose key for CE3 is wrong.
CERT_CES: Final = ("ce1", "ce3")
WRONG_PAIR: Final = ("ce4", "ce3")


def _private_bytes(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _crl(ca_key: Any, issuer: Any, serials: list[int], number: int) -> bytes:
    """A CRL (DER) of the demo CA revoking ``serials``."""
    import datetime  # noqa: PLC0415 - the IKE scenario only

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415

    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now - datetime.timedelta(minutes=5))
        .next_update(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
        # charon finds a CA's CRLs by the CA's key identifier (RFC 5280 makes it mandatory in a CRL).
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def revoke(workdir: Path, ce: str) -> None:
    """The demo CA revokes CE ``ce``'s certificate: ``ca.crl`` replaced (atomically) by a CRL listing it."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    ca = x509.load_der_x509_certificate((workdir / "ca.der").read_bytes())
    key = serialization.load_der_private_key((workdir / "ca.key").read_bytes(), None)
    serial = x509.load_der_x509_certificate((workdir / f"{ce}.der").read_bytes()).serial_number
    staged = workdir / "ca.crl.new"
    staged.write_bytes(_crl(key, ca.subject, [serial], 2))
    staged.rename(workdir / "ca.crl")


def make_pki(ces: dict[str, IPv4Address]) -> dict[str, bytes]:
    """A throw-away CA (``ca.der``, its key ``ca.key``, an empty CRL ``ca.crl``) and, per CE,
    ``NAME.der`` (its certificate, the CE address as IP subjectAltName: charon's identity) and
    ``NAME.key`` (its EC private key): all DER."""
    import datetime  # noqa: PLC0415 - the IKE scenario only

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ce-autoconf demo"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("ce-autoconf demo CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca.der": ca.public_bytes(serialization.Encoding.DER),
        "ca.key": ca_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "ca.crl": _crl(ca_key, ca_name, [], 1),
    }
    for ce, address in ces.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(f"{ce} {address}"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        files[f"{ce}.der"] = cert.public_bytes(serialization.Encoding.DER)
        files[f"{ce}.key"] = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    return files


class Say:
    def __init__(self, out: Callable[[str], None] = print) -> None:
        self.out = out
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.start:6.1f}s] {text}")


class TunnelLab:
    """VpnLab's server and CLI, CEs running client + runtime, LAN hosts, and what to look at."""

    def __init__(self, lab: Lab, say: Say, keying: str = "static") -> None:
        if keying not in ("static", "ike"):
            raise ValueError(f"keying {keying!r}: static or ike")
        self.lab = lab
        self.say = say
        self.keying = keying
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
        if keying == "ike":
            _private_bytes(self.lab.workdir / f"vpn{VPN_ID}.psk", secrets.token_hex(32).encode())
            _private_bytes(self.lab.workdir / "wrong.psk", secrets.token_hex(32).encode())
            for file, data in make_pki({n: ADDRESSES[n] for n in CERT_CES}).items():
                path = self.lab.workdir / file
                if file.endswith(".key"):
                    _private_bytes(path, data)
                else:
                    path.write_bytes(data)
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
        (ce.workdir / "runtime.toml").write_text(
            RUNTIME_TOML.format(
                vpn=VPN_ID,
                routes=routes,
                ike=IKE_SECTION if self.keying == "ike" else "",
                keying=self._keying(name),
            )
        )
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

    def _keying(self, name: str) -> str:
        """The ``[[vpn]]`` keying lines of CE ``name``."""
        if self.keying == "static":
            return f'secret_file = "../vpn{VPN_ID}.key"'
        psk = f"../vpn{VPN_ID}.psk"
        if name in CERT_CES:
            # Certificates for the VPN; pre-shared keys for the peers without a certificate.
            pairs = ", ".join(
                f'{{ peer = "{ADDRESSES[o]}", psk_file = "{psk}" }}' for o in ADDRESSES if o not in CERT_CES
            )
            return (
                f'keying = "ike"\ncert_file = "../{name}.der"\nkey_file = "../{name}.key"\n'
                f'ca_file = "../ca.der"\ncrl_file = "../ca.crl"\npairs = [{pairs}]'
            )
        lines = f'keying = "ike"\npsk_file = "{psk}"'
        if name == WRONG_PAIR[0]:
            lines += f'\npairs = [{{ peer = "{ADDRESSES[WRONG_PAIR[1]]}", psk_file = "../wrong.psk" }}]'
        return lines

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

    def spis(self, name: str, peer: str) -> set[str]:
        """The SPIs of the ESP SAs between CE ``name`` and CE ``peer`` in ``name``'s kernel."""
        a, b = (re.escape(str(ADDRESSES[n])) for n in (name, peer))
        pattern = rf"^src (?:{a} dst {b}|{b} dst {a})\s+proto esp spi (0x[0-9a-f]+)"
        return set(re.findall(pattern, self.sas(name), re.M))

    def sa_count(self, name: str, peer: str) -> int:
        """ESP SAs (both directions) between CE ``name`` and CE ``peer`` in ``name``'s kernel."""
        a, b = str(ADDRESSES[name]), str(ADDRESSES[peer])
        return len(re.findall(rf"^src ({a} dst {b}|{b} dst {a})$", self.sas(name), re.M))

    def policy_count(self, name: str, peer: str) -> int:
        """XFRM policies from or to CE ``peer``'s address in CE ``name``'s kernel."""
        a = re.escape(str(ADDRESSES[peer]))
        return len(
            re.findall(rf"^src (\S+ dst {a}/32|{a}/32 dst \S+)", self.ns(name).ip("xfrm", "policy"), re.M)
        )

    def guards(self, name: str) -> set[tuple[str, str]]:
        """CE ``name``'s fail-closed guards: (peer, direction) of each block policy of ours."""
        entry = (
            rf"^src (\S+)/\d+ dst (\S+)/\d+ proto ipencap\s*\n"
            rf"\s+dir (in|out) action block priority {GUARD}\b"
        )
        found = re.findall(entry, self.ns(name).ip("xfrm", "policy"), re.M)
        return {(dst if way == "out" else src, way) for src, dst, way in found}

    def vici(self, name: str) -> Any:
        """A VICI session on CE ``name``'s own charon (the socket is a file: no namespace needed)."""
        from ce_runtime.ike.vici_backend import ViciClient  # noqa: PLC0415 - IKE scenario only

        return ViciClient(self.vpn.ces[name].workdir / "runtime" / "ike" / "charon.vici")

    def ike_sas(self, name: str) -> dict[str, int] | None:
        """CE ``name``'s IKE_SAs per peer CE (charon's list-sas): more than 1 is a duplicate.
        None while its charon does not answer (not started yet, or killed)."""
        try:
            client = self.vici(name)
        except OSError:
            return None
        try:
            listed = client.list_sas()
        except OSError:
            return None
        finally:
            client.close()
        by_address = {f"ce-{a}": n for n, a in ADDRESSES.items()}
        out: dict[str, int] = {}
        for entry in listed:
            for conn in entry:
                peer = by_address.get(conn.decode() if isinstance(conn, bytes) else str(conn), "?")
                out[peer] = out.get(peer, 0) + 1
        return out

    def ike(self, name: str, peer: str) -> dict[str, Any]:
        """The backend's state of CE ``name``'s tunnel to ``peer`` (status.json)."""
        tunnel = self.status(name).get("tunnels", {}).get(str(ADDRESSES[peer]), {})
        state: dict[str, Any] = tunnel.get("ike", {})
        return state

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
            if self.keying == "ike":  # what charon said, IKE and CHILD_SA lines only (level 1-2: no keys)
                for name in sorted(self.nodes):
                    path = self.vpn.ces[name].workdir / "runtime" / "ike" / "charon.log"
                    with contextlib.suppress(OSError):
                        lines = [x for x in path.read_text().splitlines() if "[IKE]" in x or "[CHD]" in x]
                        logs += f"\n--- charon {name}\n" + "\n".join(lines[-30:])
            raise DemoError(f"no {what} within {timeout:.0f} s\n{logs}") from None

    def meshed(self, members: list[str], *, broken: tuple[str, str] | None = None) -> bool:
        """Every member has a tunnel to every other member, and hears it (but the ``broken`` pair)."""
        for name in members:
            want = {ADDRESSES[o] for o in members if o != name and {name, o} != set(broken or ())}
            if not want <= set(self.tunnels(name)):
                return False
            health = self.health(name)
            if any(health.get(p) != "alive" for p in want):
                return False
        return True


def ping_captured(t: TunnelLab, check: Callable[[str, bool, str], None]) -> None:
    """LAN1 pings LAN3 while the provider bridge is captured: only ESP between the CEs (and, with
    IKE keying, charon's IKE messages on UDP 500), never an inner packet."""
    capture = t.lab.capture(t.vpn.switch, dev="br0", name="provider", filt="ip")
    ok = t.ping("ce1", "ce3")
    check("ping13", ok, "a host behind CE1 (10.1.0.2) pings a host behind CE3 (10.3.0.2)")
    time.sleep(0.5)
    path = capture.stop()
    done = t.vpn.switch.run("tcpdump", "-n", "-r", str(path), check=False)
    lines = done.stdout.splitlines()
    ces = {str(a) for a in ADDRESSES.values()}
    between = [x for x in lines if len(set(re.findall(r"10\.66\.0\.\d+", x)) & ces) == 2]
    esp = [x for x in between if "ESP(spi=" in x]
    ike = [x for x in between if t.keying == "ike" and re.search(r"\.500 > .*\.500: isakmp", x)]
    leaks = [x for x in lines if re.search(r"\b10\.[1-4]\.0\.\d+\b", x) or "ICMP" in x]
    check(
        "capture",
        bool(esp) and len(esp) + len(ike) == len(between) and not leaks,
        f"provider bridge: {len(esp)} ESP packets between CEs, {len(ike)} IKE, "
        f"{len(between) - len(esp) - len(ike)} other, {len(leaks)} with an inner address",
    )


def run_scenario(lab: Lab, say: Say, check: Callable[[str, bool, str], None]) -> None:
    t = TunnelLab(lab, say)
    vpn = t.vpn
    vpn.start_server(timeout=20 * _PATIENCE)
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

    ping_captured(t, check)

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


def _running(pid: int) -> bool:
    """A live process (a zombie nobody reaped yet is dead for us)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def run_ike_scenario(lab: Lab, say: Say, check: Callable[[str, bool, str], None]) -> None:
    """The same CEs with IKE keying (ce_runtime.ike: each CE's own charon, driven over VICI).

    Checked: all pairs up (CE1-CE3 by certificates, the others by the VPN's pre-shared key), LAN
    traffic crosses, only ESP and IKE on the bridge, no duplicate SAs; a CHILD_SA rekey without a
    "down"; CE4 added (time to traffic), its pair with CE3 configured with a wrong key: never up,
    the alarm after the backoff; CE2 deleted: tunnels, SAs and IKE_SAs gone; CE1's runtime and
    charon killed (SIGKILL) and restarted: every tunnel back, no duplicates.
    """
    t = TunnelLab(lab, say, keying="ike")
    vpn = t.vpn
    vpn.start_server(timeout=20 * _PATIENCE)
    vpn.add_vpn()
    first = ["ce1", "ce2", "ce3"]
    with ThreadPoolExecutor(len(first)) as pool:  # three CLI processes at once: Python starts are slow
        list(pool.map(vpn.add_ce, first))
    say("server up; VPN 100 and CE1..CE3 created with the management CLI; IKE keying: CE1-CE3 with "
        "certificates, the other pairs with the VPN's pre-shared key")  # fmt: skip
    started = time.monotonic()
    for name in first:
        t.start(name)

    def single(members: list[str]) -> bool:
        """One IKE_SA and two ESP SAs per working pair at every member: no duplicates."""
        for name in members:
            ike_sas = t.ike_sas(name)
            if ike_sas is None:
                return False
            for other in members:
                if other == name or {name, other} == set(WRONG_PAIR):
                    continue
                if ike_sas.get(other) != 1 or t.sa_count(name, other) != 2:
                    return False
        return True

    t.wait(lambda: t.meshed(first), 120, "IKE tunnels between CE1, CE2, CE3")
    meshed = time.monotonic() - started
    auth = t.ike("ce1", "ce3").get("auth"), t.ike("ce1", "ce2").get("auth")
    check("mesh3", auth == ("cert", "psk"),
          f"every pair of CE1..CE3 has its IKE-keyed tunnel and hears the other ({meshed:.1f} s after "
          f"start); CE1-CE3 authenticated with {auth[0]}, CE1-CE2 with {auth[1]}")  # fmt: skip
    ping_captured(t, check)
    t.wait(lambda: single(first), 30, "one IKE_SA and two SAs per pair")
    check("single", True, "one IKE_SA and 2 ESP SAs per pair at CE1, CE2, CE3 (no duplicates)")
    ways = ("in", "out")
    expected = {n: {(str(ADDRESSES[p]), way) for p in first if p != n for way in ways} for n in first}
    check("guards", all(t.guards(n) == expected[n] for n in first),
          "every CE has two guards per peer (ipip to/from it blocked below charon's policies)")  # fmt: skip

    # A CHILD_SA rekey is make-before-break: new SPIs, no "down", traffic continues.
    old = t.spis("ce1", "ce3")
    rekeyed = time.time()
    client = t.vici("ce1")
    try:
        client.rekey(f"ce-{ADDRESSES['ce3']}")
    finally:
        client.close()
    new = t.wait(lambda: t.spis("ce1", "ce3") - old, 30, "new SAs between CE1 and CE3 after the rekey")
    events = t.wait(lambda: t.events("ce1", "TunnelRekeyed", rekeyed), 30, "CE1's TunnelRekeyed event")
    downs = t.events("ce1", "TunnelDown", rekeyed) + t.events("ce3", "TunnelDown", rekeyed)
    check(
        "rekey",
        t.ping("ce1", "ce3", 2) and not downs,
        f"CE1-CE3 CHILD_SA rekeyed ({', '.join(sorted(old))} -> {', '.join(sorted(new))}; TunnelRekeyed "
        f"with inbound SPI {events[-1].get('spi_in')}): no down, LAN1 reaches LAN3",
    )

    # CE4 joins; its key for CE3 is wrong.
    added = time.monotonic()
    vpn.add_ce("ce4")
    t.start("ce4")
    members = [*first, "ce4"]
    t.wait(lambda: t.ping("ce1", "ce4", 1), 120, "traffic from LAN1 to LAN4")
    flowing = time.monotonic() - added
    t.wait(lambda: t.meshed(members, broken=WRONG_PAIR), 90, "CE4's tunnels to CE1 and CE2")
    check("ce4", True,
          f"CE4 added (CLI) -> FORCERENEW -> INFORM -> IKE: LAN1 -> LAN4 traffic flowing {flowing:.1f} s "
          f"after the CLI call (CE4's process start included); CE4's tunnels to CE1, CE2 up and alive "
          f"after {time.monotonic() - added:.1f} s")  # fmt: skip
    ce3, ce4 = (str(ADDRESSES[n]) for n in ("ce3", "ce4"))
    wall_added = time.time() - (time.monotonic() - added)

    def of(name: str, kind: str, peer: str) -> list[dict[str, Any]]:
        return [e for e in t.events(name, kind, wall_added) if e.get("peer") == peer]

    t.wait(lambda: of("ce3", "TunnelAlarm", ce4), 90, "CE3's alarm for CE4 (wrong key)")
    failed = [e.get("detail", "") for e in of("ce3", "TunnelFailed", ce4)]
    alarm = of("ce3", "TunnelAlarm", ce4)[0]["time"] - wall_added
    responder = {e.get("detail", "") for e in of("ce4", "TunnelFailed", ce3)}
    ups = of("ce3", "TunnelUp", ce4) + of("ce4", "TunnelUp", ce3)
    leaked = t.ping("ce3", "ce4", 1)
    # The first attempts may find CE4's charon without the connection yet (its process starting).
    check("wrongkey", "auth-failed" in failed and not ups and not leaked,
          f"CE4's key for CE3 is wrong: {'never up' if not ups else 'UP'}; CE3 (the initiator) reports "
          f"{len(failed)} failures ({', '.join(failed)}) with backoff and the alarm {alarm:.1f} s after CE4 "
          f"was added; CE4 (responder) reports {sorted(responder) or 'nothing yet'}; LAN3 "
          f"{'REACHES' if leaked else 'does not reach'} LAN4")  # fmt: skip

    # CE2 leaves: links, SAs and IKE_SAs with it go everywhere.
    removed = time.monotonic()
    vpn.delete_ce("ce2")
    rest = ["ce1", "ce3", "ce4"]
    t.wait(
        lambda: all(
            ADDRESSES["ce2"] not in t.tunnels(n)
            and t.sa_count(n, "ce2") == 0
            and t.policy_count(n, "ce2") == 0
            and "ce2" not in (t.ike_sas(n) or {"ce2": 1})
            for n in rest
        ),
        60,
        "CE2's tunnels, SAs and IKE_SAs gone",
    )
    check("ce2gone", True, f"CE2 deleted: its links, ESP SAs, policies, IKE_SAs gone at CE1, CE3, CE4 in "
          f"{time.monotonic() - removed:.1f} s")  # fmt: skip
    t.nodes["ce2"].stop(20)

    # CE1's runtime alone killed (SIGKILL), its charon left running: the restarted runtime adopts
    # charon and its connections under the reqids they have (after CE2's removal they are no
    # longer in address order, so numbering afresh would change them); no tunnel goes down.
    pid_file = vpn.ces["ce1"].workdir / "runtime" / "ike" / "charon.pid"
    pid = int(pid_file.read_text())
    reqids = {p: t.ike("ce1", p).get("reqid") for p in ("ce3", "ce4")}
    killed = time.time()
    os.kill(t.nodes["ce1"].pid, signal.SIGKILL)
    t.nodes["ce1"].popen.wait(10)
    (vpn.ces["ce1"].workdir / "runtime" / "status.json").unlink()
    t.start("ce1")
    t.wait(lambda: t.meshed(rest, broken=WRONG_PAIR), 90, "CE1's tunnels up again, charon adopted")
    t.wait(lambda: single(rest), 30, "no duplicate SAs after the adoption")
    kept = {p: t.ike("ce1", p).get("reqid") for p in ("ce3", "ce4")}
    downs = [e for n in rest for e in t.events(n, "TunnelDown", killed)]
    same = int(pid_file.read_text()) == pid and kept == reqids
    check("adopt", same and not downs and t.ping("ce1", "ce3", 2),
          f"CE1's runtime alone killed (SIGKILL) and restarted: charon (pid {pid}) adopted, connections "
          f"reloaded under their reqids ({', '.join(f'{p} {r:#x}' for p, r in sorted(kept.items()) if r)}; "
          f"before: {', '.join(f'{p} {r:#x}' for p, r in sorted(reqids.items()) if r)}), "
          f"{len(downs)} TunnelDown at CE1, CE3, CE4; LAN1 reaches LAN3")  # fmt: skip

    # CE1's runtime and its charon killed with SIGKILL, then restarted.
    t.nodes["ce1"].kill()  # SIGKILL to its process group: the runtime (and a charon it started)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # the adopted charon is in the killed runtime's group, not this one
    t.wait(lambda: not _running(pid), 10, "CE1's charon gone")
    stale = t.sa_count("ce1", "ce3") + t.sa_count("ce1", "ce4")
    # The window between a new charon's flush of its predecessor's policies and the reload of
    # the connections, held open: charon's policies for CE1-CE3 deleted by hand while CE1 is
    # down. The guards keep CE1's link to CE3 fail-closed: no IP-in-IP leaves in the clear.
    ce1, ce3 = str(ADDRESSES["ce1"]), str(ADDRESSES["ce3"])
    for src, dst, way in ((ce1, ce3, "out"), (ce3, ce1, "in")):
        t.ns("ce1").ip("xfrm", "policy", "delete", "src", f"{src}/32", "dst", f"{dst}/32", "proto", "4",
                       "dir", way)  # fmt: skip

    def in_clear(name: str) -> list[str]:
        """IP-in-IP on the provider bridge while LAN1 pings LAN3."""
        capture = t.lab.capture(t.vpn.switch, dev="br0", name=name, filt="ip proto 4")
        t.ping("ce1", "ce3", 2)
        time.sleep(0.5)
        return t.vpn.switch.run("tcpdump", "-n", "-r", str(capture.stop()), check=False).stdout.splitlines()

    guarded = (ce3, "out") in t.guards("ce1")
    clear = in_clear("failclosed")
    # The control: the guard deleted as well, the same ping leaks (so the capture would see it).
    t.ns("ce1").ip("xfrm", "policy", "delete", "src", "0.0.0.0/0", "dst", f"{ce3}/32", "proto", "4",
                   "dir", "out")  # fmt: skip
    unguarded = in_clear("unguarded")
    check("failclosed", guarded and not clear and bool(unguarded),
          f"CE1 down, charon's policies for CE1-CE3 gone: {len(clear)} IP-in-IP packets in the clear on "
          f"the provider bridge while LAN1 pings LAN3 (the guards block them); control, CE1's guard "
          f"deleted too: {len(unguarded)}")  # fmt: skip
    (vpn.ces["ce1"].workdir / "runtime" / "status.json").unlink()  # the killed runtime's last word
    restarted = time.monotonic()
    t.start("ce1")
    t.wait(lambda: t.meshed(rest, broken=WRONG_PAIR), 120, "CE1's tunnels back after kill -9")
    back = time.monotonic() - restarted
    t.wait(lambda: single(rest), 60, "no duplicate SAs after the restart")
    check(
        "restart",
        stale > 0 and (ce3, "out") in t.guards("ce1"),
        f"CE1's runtime and charon killed (SIGKILL; {stale} of their SAs left in the kernel): "
        f"restarted, tunnels to CE3 (certificates) and CE4 up and alive again in {back:.1f} s; "
        f"one IKE_SA, 2 ESP SAs per pair at CE1, CE3, CE4 after {time.monotonic() - restarted:.1f} s; "
        "the deleted guard is back",
    )
    check("ping13again", t.ping("ce1", "ce3", 2), "CE1's LAN reaches CE3's LAN again")

    # Keys only where they belong: never in charon's files, the status files or the runtimes' logs.
    psk = (lab.workdir / f"vpn{VPN_ID}.psk").read_bytes()
    found, modes = [], []
    for name in members:
        run_dir = vpn.ces[name].workdir / "runtime"
        for path in [p for p in run_dir.rglob("*") if p.is_file()]:
            if psk in path.read_bytes():
                found.append(str(path))
        if psk.decode() in t.nodes[name].log():
            found.append(f"{name}'s log")
        ike_dir = run_dir / "ike"
        modes.append((ike_dir.stat().st_mode & 0o777, (ike_dir / "strongswan.conf").stat().st_mode & 0o777))
    check("nokeys", not found and set(modes) == {(0o700, 0o600)},
          f"the pre-shared key appears in none of charon's files, status files, logs ({found or 'none'}); "
          f"charon's directories 0700, strongswan.conf 0600")  # fmt: skip

    # Revocation: the CA revokes CE3's certificate; the new CRL reaches CE1 and CE3 (the file
    # their crl_file names). At its next round CE1 loads it, terminates its certificate peers'
    # IKE_SAs (charon checks revocation only when a peer authenticates), and the re-established
    # CE1-CE3 fails: down for good. CE1-CE4 (pre-shared key) is left alone.
    revoked = time.time()
    revoke(lab.workdir, "ce3")

    def from_ce1(kind: str, peer: str) -> list[dict[str, Any]]:
        return [e for e in t.events("ce1", kind, revoked) if e.get("peer") == str(ADDRESSES[peer])]

    def after(kind: str, peer: str, since: float) -> list[dict[str, Any]]:
        return [e for e in from_ce1(kind, peer) if e.get("time", 0) > since]

    # Whichever of CE1 and CE3 runs its round first terminates the pair's IKE_SA; CE3's own
    # check of CE1 passes (CE1's certificate is good), so the pair may come up once more, until
    # CE1 has the new CRL: from CE1's drop after its refresh on, every attempt is refused.
    def refused_since_last_drop() -> list[dict[str, Any]]:
        drops = [e["time"] for e in from_ce1("TunnelDown", "ce3")]
        if not drops or after("TunnelUp", "ce3", max(drops)):
            return []
        return after("TunnelFailed", "ce3", max(drops))

    try:

        def twice() -> list[dict[str, Any]] | None:
            failed = refused_since_last_drop()
            return failed if len(failed) >= 2 else None

        failures = t.wait(twice, 60, "CE1's re-authentications of CE3 refused (twice: the retry too)")
    finally:  # what charon made of the CRL, to read when this fails
        log = (vpn.ces["ce1"].workdir / "runtime" / "ike" / "charon.log").read_text(errors="replace")
        lines = [x for x in log.splitlines() if re.search(r"certificate status|revoked|crl #", x, re.I)]
        say("CE1's charon on revocation: " + " | ".join(lines[-4:]))
    last_drop = max(e["time"] for e in from_ce1("TunnelDown", "ce3"))
    reached = t.ping("ce1", "ce3", 2)
    ups = after("TunnelUp", "ce3", last_drop)
    ce4_downs = from_ce1("TunnelDown", "ce4")
    ce4_ok = t.ping("ce1", "ce4", 2)
    outcome = "REACHES" if reached else "does not reach"
    said = any("certificate was revoked" in x for x in lines)  # charon's own words for the refusal
    check("revoked", said and not reached and not ups and not ce4_downs and ce4_ok,
          f"CE3's certificate revoked (a new CRL in the file CE1 and CE3 watch): CE1 dropped the tunnel "
          f"{last_drop - revoked:.1f} s later and refuses CE3 since ({len(failures)} failures: "
          f"{', '.join(sorted({str(f.get('detail')) for f in failures}))}; {len(ups)} TunnelUp; charon: "
          f"{'certificate was revoked' if said else 'NO revocation logged'}); "
          f"LAN1 {outcome} LAN3; CE1-CE4 (pre-shared key): {len(ce4_downs)} TunnelDown, LAN1 "
          f"{'reaches' if ce4_ok else 'DOES NOT REACH'} LAN4")  # fmt: skip

    status = vpn.stop_server()
    for name in rest:
        t.nodes[name].stop(20)
    say(f"server stopped (exit {status}); CE runtimes stopped (on_exit = stop: links, then charon's SAs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ce_autoconf.tunnel_demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--keying", choices=("static", "ike"), default="static", help="ike: the scenario with charon keying"
    )
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
        (run_ike_scenario if args.keying == "ike" else run_scenario)(lab, say, check)
    except (DemoError, subprocess.TimeoutExpired) as exc:
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
