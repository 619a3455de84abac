"""``ce-autoconf demo``: the project's main job, shown step by step.

1. The codec against real bytes: a dhcpcd 9.4.1 exchange with RFC 3118 delayed
   authentication and authenticated FORCERENEWs (``examples/captures/06_fr_delayed.pcap``),
   every MAC checked with the CE's key; the two forged FORCERENEWs in it are refused.
2. Provisioning in network namespaces: ``ce-autoconf server run`` on a bridge, the VPN and
   CE1..CE3 created through the management CLI (``ce-autoconf vpn add``, ``ce add
   --key-file``), three CEs running ``ce-autoconf client`` with their RFC 3118 keys. Each
   binds, asks by DHCPINFORM for its VPN, and learns its peers. CE4 is added: the others get
   an authenticated FORCERENEW and learn of it. CE2 is removed: the others forget it.

Everything runs in namespaces this process creates (named ``ceademo<pid>...``) and is
removed at the end, on Ctrl-C or SIGTERM too; namespaces left by a run that was killed are
removed by the next. :class:`VpnLab` is the scenario's machinery, shared with
tests/e2e/test_vpn_provisioning.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Final, TextIO, TypeVar

from ce_autoconf.netns import Lab, Namespace, Process, netns_unavailable_reason, remove_stale, wait_for

__all__ = ["CES", "VPN_ID", "Ce", "DemoError", "VpnLab", "add_arguments", "register", "run"]

T = TypeVar("T")

ROOT: Final = Path(__file__).resolve().parents[1]
CAPTURE: Final = ROOT / "examples" / "captures" / "06_fr_delayed.pcap"
CAPTURE_KEY: Final = "0x1234:7264632d7365637265742d6b65792d31"  # examples/captures/README.md
NS_STEM: Final = "ceademo"

SERVER_ADDRESS: Final = IPv4Address("10.66.0.1")
POOL: Final = ("10.66.0.100", "10.66.0.199")
API: Final = "http://127.0.0.1:8067"
VPN_ID: Final = 100
VPN_NAME: Final = "corp"
#: name -> (hardware address, RFC 3118 secret ID)
CES: Final = {
    "ce1": ("02:00:00:66:00:01", 0x1001),
    "ce2": ("02:00:00:66:00:02", 0x1002),
    "ce3": ("02:00:00:66:00:03", 0x1003),
    "ce4": ("02:00:00:66:00:04", 0x1004),
}

SERVER_TOML: Final = """\
# ce-autoconf demo server: one access network on a bridge, every CE must authenticate.
[server]
server_id = "{server}"

[forcerenew]
first_retry = 2.0

[[subnets]]
network = "10.66.0.0/24"
interface = "eth0"
pools = ["{first}-{last}"]
routers = ["{server}"]
lease_time = 600
auth = "required"

[store]
path = "store.sqlite"

[api]
listen = "127.0.0.1:8067"
token_file = "api.token"
{secrets}"""

CLIENT_TOML: Final = """\
interface = "eth0"
hardware_address = "{mac}"
state_file = "state.json"
secret_id = {secret_id}
key_file = "{name}.key"
hostname = "{name}"
apply_address = true
default_route = false

[timing]
initial_delay = 0.0
"""


class DemoError(RuntimeError):
    """A step did not happen in time; the message says which, with the relevant log."""


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass
class Ce:
    """One CE: its namespace (plugged into the bridge) and, once started, its client."""

    name: str
    mac: str
    secret_id: int
    workdir: Path
    ns: Namespace | None = None
    client: Process | None = None

    @property
    def key_file(self) -> Path:
        return self.workdir / f"{self.name}.key"

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    def events(self) -> list[dict[str, Any]]:
        """The client's JSON-lines events so far (its stdout)."""
        if self.client is None:
            return []
        found = []
        for line in self.client.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def address(self) -> IPv4Address | None:
        """The address of the client's last LeaseBound/LeaseRenewed, unless lost since."""
        address = None
        for event in self.events():
            if event.get("event") in ("LeaseBound", "LeaseRenewed"):
                address = IPv4Address(event["lease"]["address"])
            elif event.get("event") == "LeaseLost":
                address = None
        return address

    def peers(self, vpn_id: int = VPN_ID) -> frozenset[IPv4Address] | None:
        """The peer set of the client's last VpnPeersChanged for ``vpn_id`` (None: none yet)."""
        peers = None
        for event in self.events():
            if event.get("event") == "VpnPeersChanged" and event.get("vpn_id") == vpn_id:
                peers = frozenset(IPv4Address(a) for a in event["peers"])
        return peers

    def informed(self) -> int:
        """How many VpnPeersChanged events the client has reported."""
        return sum(1 for e in self.events() if e.get("event") == "VpnPeersChanged")


class VpnLab:
    """The demo's network: a bridge, our server, CEs running our client, the management CLI.

    ``lab`` owns the namespaces and processes (its ``close`` removes them); ``python`` runs
    ``-m ce_autoconf`` inside them.
    """

    def __init__(self, lab: Lab, *, python: str = sys.executable, secrets_file: bool = False) -> None:
        self.lab = lab
        self.python = python
        self.workdir = lab.workdir
        self.switch = lab.namespace("sw")
        lab.bridge(self.switch)
        self.server_ns = lab.namespace("srv")
        lab.attach(self.switch, self.server_ns, address=f"{SERVER_ADDRESS}/24")
        self.server: Process | None = None
        self.token_file = _private(self.workdir / "api.token", secrets.token_hex(32) + "\n")
        extra = '\n[secrets]\nfile = "secrets.toml"\n' if secrets_file else ""
        self.config = self.workdir / "server.toml"
        self.config.write_text(
            SERVER_TOML.format(server=SERVER_ADDRESS, first=POOL[0], last=POOL[1], secrets=extra)
        )
        self.ces: dict[str, Ce] = {}
        for name, (mac, secret_id) in CES.items():
            directory = self.workdir / name
            directory.mkdir(exist_ok=True)
            ce = Ce(name, mac, secret_id, directory)
            _private(ce.key_file, secrets.token_hex(16) + "\n")
            self.ces[name] = ce

    # -- the server ----------------------------------------------------------------------------

    def command(self, *argv: str) -> list[str]:
        return [self.python, "-m", "ce_autoconf", *argv]

    def start_server(self, timeout: float = 20.0) -> Process:
        server = self.server_ns.start(
            *self.command("server", "run", "--config", str(self.config)), name="server"
        )
        self.server = server
        self.wait(
            lambda: "server.ready" in server.log() or not server.running(),
            timeout,
            "the server to start",
            server,
        )
        if not server.running():
            raise DemoError(
                f"the server exited with status {server.popen.returncode}:\n{_tail(server.log())}"
            )
        return server

    def stop_server(self, timeout: float = 10.0) -> int:
        """SIGTERM, as an init system would; the exit status (0: clean)."""
        assert self.server is not None
        return self.server.stop(timeout)

    def server_events(self) -> list[dict[str, Any]]:
        out = []
        if self.server is not None:
            for line in self.server.log().splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def manage(self, *argv: str) -> str:
        """``ce-autoconf ARGV`` (the management CLI) in the server's namespace, where the API
        listens on loopback; returns its output, raises :class:`DemoError` if it fails."""
        done = self.server_ns.run(
            "env",
            f"CE_AUTOCONF_API={API}",
            f"CE_AUTOCONF_TOKEN_FILE={self.token_file}",
            *self.command(*argv),
            check=False,
            # A Python start: seconds on hardware, far more under TCG on a loaded machine (the VM).
            timeout=120 if os.environ.get("CE_VM") == "1" else 30,
        )
        if done.returncode != 0:
            raise DemoError(f"ce-autoconf {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    @staticmethod
    def vpn_add_argv() -> list[str]:
        return ["vpn", "add", str(VPN_ID), VPN_NAME]

    def ce_add_argv(self, name: str) -> list[str]:
        ce = self.ces[name]
        return [
            "ce", "add", name, "--hw", ce.mac, "--secret-id", str(ce.secret_id),
            "--key-file", str(ce.key_file), "--vpn", str(VPN_ID),
        ]  # fmt: skip

    def add_vpn(self) -> str:
        return self.manage(*self.vpn_add_argv())

    def add_ce(self, name: str) -> str:
        return self.manage(*self.ce_add_argv(name))

    def delete_ce(self, name: str) -> str:
        return self.manage("ce", "delete", name)

    def write_secrets(self, *names: str) -> Path:
        """The server's secrets file ([secrets] file) with the keys of ``names``."""
        entries = []
        for name in names:
            ce = self.ces[name]
            key = ce.key_file.read_text().strip()
            entries.append(f'[[key]]\nsecret_id = {ce.secret_id}\nkey = "{key}"\n')
        return _private(self.workdir / "secrets.toml", "\n".join(entries))

    # -- the CEs -------------------------------------------------------------------------------

    def start_client(self, name: str) -> Ce:
        """CE ``name``'s namespace on the bridge, and ``ce-autoconf client`` in it."""
        ce = self.ces[name]
        if ce.ns is None:
            ce.ns = self.lab.namespace(name)
            self.lab.attach(self.switch, ce.ns)
            ce.ns.ip("link", "set", "eth0", "down")
            ce.ns.ip("link", "set", "eth0", "address", ce.mac)
            ce.ns.ip("link", "set", "eth0", "up")
        config = ce.workdir / "client.toml"
        config.write_text(CLIENT_TOML.format(mac=ce.mac, secret_id=ce.secret_id, name=name))
        ce.client = ce.ns.start(*self.command("client", "--config", str(config)), name=f"client-{name}")
        return ce

    def status(self, name: str) -> dict[str, Any]:
        """``ce-autoconf client status --state FILE --json`` of CE ``name``."""
        done = subprocess.run(  # noqa: S603 - our own argv
            self.command("client", "status", "--state", str(self.ces[name].state_file), "--json"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(f"client status of {name} failed: {done.stderr.strip()}")
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def expected_peers(self, name: str, members: set[str]) -> frozenset[IPv4Address]:
        """The addresses of the other bound ``members``: what ``name`` should list."""
        found = set()
        for other in members - {name}:
            address = self.ces[other].address()
            if address is not None:
                found.add(address)
        return frozenset(found)

    def names(self, addresses: frozenset[IPv4Address] | None) -> str:
        """``ce2 (10.66.0.101), ce3 (10.66.0.102)`` for a peer set."""
        if not addresses:
            return "(none)"
        by_address = {ce.address(): n for n, ce in self.ces.items()}
        named = sorted((by_address.get(a, "?"), a) for a in addresses)
        return ", ".join(f"{name} ({address})" for name, address in named)

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, condition: Callable[[], T | None], timeout: float, what: str, *logs: Process) -> T:
        """:func:`wait_for`, whose timeout says what was awaited and shows the logs involved."""
        try:
            return wait_for(condition, timeout, interval=0.1, what=what)
        except TimeoutError:
            shown = "\n".join(f"  {p.log_path.name}:\n{_tail(p.log())}" for p in logs)
            raise DemoError(f"no {what} within {timeout:.0f} s\n{shown}") from None

    def wait_bound(self, name: str, timeout: float = 30.0) -> IPv4Address:
        ce = self.ces[name]
        assert ce.client is not None
        return self.wait(ce.address, timeout, f"lease for {name}", ce.client)

    def wait_peers(self, members: set[str], timeout: float = 30.0) -> dict[str, frozenset[IPv4Address]]:
        """Until every member's last peer set is the other members' addresses."""

        def settled() -> dict[str, frozenset[IPv4Address]] | None:
            sets = {}
            for name in sorted(members):
                peers = self.ces[name].peers()
                if peers is None or peers != self.expected_peers(name, members):
                    return None
                sets[name] = peers
            return sets

        logs = [p for p in (self.server, *(self.ces[n].client for n in sorted(members))) if p is not None]
        return self.wait(settled, timeout, f"peer sets of {', '.join(sorted(members))} settled", *logs)


# == the command ====================================================================================


def register(commands: Any) -> None:
    """Add ``demo`` to the ``ce-autoconf`` dispatcher."""
    parser = commands.add_parser(
        "demo",
        help="show the whole job in network namespaces (needs root)",
        description="Decode a real dhcpcd exchange, then provision four CEs into a VPN in network "
        "namespaces with our server, client and management CLI. Needs root.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run, usage_error=DemoError, subparser=parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    parser.add_argument("--skip-decode", action="store_true", help="skip part 1 (the capture)")
    parser.add_argument("--skip-tunnels", action="store_true", help="skip part 3 (the tunnels)")


class _Say:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.start = time.monotonic()

    def __call__(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, text: str) -> None:
        self(f"[{time.monotonic() - self.start:5.1f}s] {text}")


def _decode_part(say: _Say) -> None:
    say("Part 1: the codec against dhcpcd's real bytes")
    if not CAPTURE.exists():
        say(f"  skipped: {CAPTURE} ships with the source tree")
        return
    from ce_autoconf.cli import main  # noqa: PLC0415 - cli imports this module

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["decode", "--json", "--key", CAPTURE_KEY, str(CAPTURE)])
    if status != 0:
        raise DemoError(f"decoding {CAPTURE} failed: {err.getvalue().strip()}")
    say(f"  {CAPTURE.relative_to(ROOT)}: dhcpcd 9.4.1 against our server, key of secret ID 0x1234")
    for line in out.getvalue().splitlines():
        record = json.loads(line)
        auth = record.get("auth")
        if auth is None:
            verdict = "no authentication option"
        elif auth["valid"]:
            verdict = "MAC valid"
        elif auth.get("secret_id") is None:
            verdict = "no MAC (delayed authentication: the client asks for it)"
        else:
            verdict = f"MAC WRONG: refused ({auth['reason']})"
        frame = record["source"].rpartition(":")[2]
        say(f"  {frame:>9}  {record['message_type']:<15} {verdict}")
    say("  " + err.getvalue().strip().splitlines()[-1])
    say()


def _scenario(say: _Say, lab: Lab) -> None:
    say("Part 2: four CEs provisioned into a VPN, in network namespaces")
    vpn = VpnLab(lab)
    say.step(f"namespaces up: a bridge, the server at {SERVER_ADDRESS}/24 (working directory {lab.workdir})")
    vpn.start_server()
    say.step("server up: ce-autoconf server run (DHCP on eth0, RFC 3118 required; API on 127.0.0.1:8067)")

    def manage(*argv: str) -> None:
        shown = " ".join(argv).replace(f"{lab.workdir}/", "")
        say.step(f"$ ce-autoconf {shown}")
        for line in vpn.manage(*argv).strip().splitlines():
            say(f"          {line}")

    manage(*vpn.vpn_add_argv())
    first = ["ce1", "ce2", "ce3"]
    for name in first:
        manage(*vpn.ce_add_argv(name))
    for name in first:
        vpn.start_client(name)
    say.step("CE1..CE3 started: ce-autoconf client --config (each in its namespace, with its key)")
    for name in first:
        address = vpn.wait_bound(name)
        say.step(f"{name} bound {address} (delayed authentication: every server reply signed with its key)")
    members = set(first)
    sets = vpn.wait_peers(members)
    say.step("DHCPINFORM answered, peer lists:")
    for name, peers in sorted(sets.items()):
        say(f"          {name}: VPN {VPN_ID} peers {vpn.names(peers)}")

    manage(*vpn.ce_add_argv("ce4"))
    vpn.start_client("ce4")
    address = vpn.wait_bound("ce4")
    say.step(f"ce4 started and bound {address}; the server sends CE1..CE3 an authenticated FORCERENEW")
    members.add("ce4")
    before = {n: vpn.ces[n].informed() for n in first}
    sets = vpn.wait_peers(members)
    say.step("FORCERENEW -> renew -> DHCPINFORM, peer lists updated:")
    for name, peers in sorted(sets.items()):
        again = " (asked again)" if name in before and vpn.ces[name].informed() > before[name] else ""
        say(f"          {name}: VPN {VPN_ID} peers {vpn.names(peers)}{again}")

    manage("ce", "delete", "ce2")
    members.discard("ce2")
    sets = vpn.wait_peers(members)
    say.step("FORCERENEW again; ce2 is gone from every peer list:")
    for name, peers in sorted(sets.items()):
        say(f"          {name}: VPN {VPN_ID} peers {vpn.names(peers)}")

    sent = sum(1 for e in vpn.server_events() if e.get("event") == "forcerenew.sent")
    status = vpn.stop_server()
    say.step(f"server stopped by SIGTERM (exit status {status}); it sent {sent} FORCERENEWs in all")


def _kernel_has_tunnels(lab: Lab) -> str | None:
    """None if this kernel creates ipip links and ESP states (tried in a scratch namespace), else why not."""
    ns = lab.namespace("probe")
    try:
        ns.ip("link", "add", "t0", "type", "ipip", "local", "192.0.2.1", "remote", "192.0.2.2")
        ns.ip("xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x4242",
              "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128")  # fmt: skip
    except subprocess.CalledProcessError as exc:
        return (exc.stderr or str(exc)).strip().splitlines()[-1]
    return None


def _tunnel_part(say: _Say, lab: Lab) -> None:
    """Part 3: ce_autoconf.tunnel_demo, here if the kernel can, else in the micro-VM (tests/vm)."""
    say()
    say("Part 3: the tunnels (IP-in-IP protected by ESP) between four CEs running client + runtime")
    why = _kernel_has_tunnels(lab)
    if why is None:
        from ce_autoconf.netns import Lab as _Lab  # noqa: PLC0415
        from ce_autoconf.tunnel_demo import Say, run_scenario  # noqa: PLC0415

        failures: list[str] = []

        def check(name: str, ok: bool, text: str) -> None:
            say(f"          {'ok  ' if ok else 'FAIL'} {text}")
            if not ok:
                failures.append(name)

        tlab = _Lab(lab.workdir / "tunnels", prefix=f"{lab.prefix}t")
        (lab.workdir / "tunnels").mkdir(exist_ok=True)
        try:
            run_scenario(tlab, Say(lambda text: say(f"          {text}")), check)
        finally:
            tlab.close()
        if failures:
            raise DemoError(f"tunnel checks failed: {', '.join(failures)}")
        return
    say(f"  this kernel cannot ({why}): running it in a qemu micro-VM with Debian's kernel")
    sys.path.insert(0, str(ROOT / "tests" / "vm"))
    import microvm  # noqa: PLC0415 - the test harness, shared with the demo

    reason = microvm.vm_unavailable_reason()
    if reason is not None:
        raise DemoError(f"part 3 needs the micro-VM: {reason}")
    say.step(
        "booting the VM (software emulation: the scenario takes about 5 minutes; output comes at the end)"
    )
    result = microvm.run_in_vm(f'"{sys.executable}" -m ce_autoconf.tunnel_demo', timeout=900, memory_mb=1536)
    for line in result.stdout.splitlines():
        if not line.startswith(("CHECK ", "SCENARIO ")):
            say(f"          {line}")
    say.step(f"VM run finished in {result.seconds:.0f} s")
    if "SCENARIO PASSED" not in result.stdout:
        raise DemoError(f"the tunnel scenario failed in the VM:\n{_tail(result.stdout + result.stderr, 30)}")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, stdin: BinaryIO) -> int:
    say = _Say(stdout)
    if not args.skip_decode:
        _decode_part(say)
    if os.geteuid() != 0:
        stderr.write(
            "ce-autoconf demo: part 2 creates network namespaces and needs root: run it as root "
            "(sudo ./run demo)\n"
        )
        return 1
    reason = netns_unavailable_reason()
    if reason is not None:
        stderr.write(f"ce-autoconf demo: {reason}\n")
        return 1
    stale = remove_stale(NS_STEM)
    if stale:
        say(f"(removed {len(stale)} namespaces left by an earlier run that was killed)")
    workdir = Path(tempfile.mkdtemp(prefix="ce-autoconf-demo-"))
    lab = Lab(workdir, prefix=f"{NS_STEM}{os.getpid()}")
    try:
        with _terminate_as_interrupt():
            _scenario(say, lab)
            if not args.skip_tunnels:
                _tunnel_part(say, lab)
    except DemoError as exc:
        stderr.write(f"ce-autoconf demo: {exc}\n")
        return 1
    finally:
        with _signals_ignored():  # a second Ctrl-C must not cut the clean-up short
            lab.close()
        say.step("cleaned up: every namespace and process of the demo removed")
        if args.keep:
            say(f"          configurations and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("Done.")
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt, so ``finally`` clean-up runs as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
