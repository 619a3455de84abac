"""IKE bring-up: 50 peers on one CE with ``ce_runtime.ike`` against ``swanctl --load-all``, one VM run.

    .venv/bin/python benchmarks/ike_bringup.py [--peers 50] [--rounds 3]

On the host this boots the micro-VM (tests/vm/microvm.py) once and runs itself inside (``--inside``,
in the CE's namespace). Two namespaces joined by a veth pair:

- ``ce``: the CE under test, 192.0.2.1, one ipip link per peer (``h<i>``, created before any timing),
  an inner address 10.255.<i>.1 per link so that every tunnel is pinged on its own;
- ``hub``: the responder side, N+1 addresses 192.0.2.10.. on its one interface, ipip links back, and
  **one** charon holding N+1 responder connections (built by :func:`ce_runtime.ike.config.connection`
  for each hub address, per-pair PSKs). One responder charon instead of N: N charon processes under
  TCG on 2 vCPUs would measure the VM's scheduler, not the CE; one daemon answering N IKE_SAs is
  what a hub CE does anyway, and both contenders face the very same one. It is restarted (and its
  kernel state flushed) before every round, untimed, so no round inherits another's SAs.

Contenders, each on a freshly started charon in ``ce`` with the same strongswan.conf (our
:class:`~ce_runtime.ike.charon.CharonSettings`: same plugin set, retransmission and DoS settings):

- **ours**: :class:`~ce_runtime.ike.vici_backend.IkeBackend` (the lower address, so the initiator)
  given the N peers with ``set_peers``; the clock starts just before that call;
- **swanctl**: the same N connections as a ``swanctl.conf`` rendered from the very VICI messages our
  config builds (:func:`swanctl_conf`: same proposals, transport mode, ``[ipencap]`` selectors,
  reqids, timers, PSKs), with ``start_action = trap|start`` (ours: ``trap`` plus the backend's own
  initiation) loaded by ``swanctl --load-all``; the clock starts just before that process starts.

Both are timed the same way: charon's ``child-updown`` events (a separate VICI session) until every
connection has reported up, confirmed by one ``list-sas`` (an ESTABLISHED IKE_SA with an INSTALLED
``ipip`` CHILD_SA each: "installed"; polling ``list-sas`` instead slowed what it measured), and an
ICMP echo through each peer's ipip link, sent once its SA is up and repeated every 0.2 s until
answered, until every tunnel has answered ("traffic"). Rounds alternate the order; every round ends
with charon stopped and both namespaces' SAs and policies flushed. Then, with ours running and N
tunnels up, one more peer is added (``set_peers`` with N+1) and timed to its first echo reply;
the same for swanctl (the file with N+1 connections, ``swanctl --load-all`` again).
A warm-up bring-up of 2 peers (crypto modules, page cache) is not reported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import vici

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ce_runtime.ike.charon import Charon, CharonSettings, charon_binary  # noqa: E402
from ce_runtime.ike.config import (  # noqa: E402
    IKE_REQID_BASE,
    IkePeer,
    PskAuth,
    conn_name,
    connection,
    shared_secret,
)
from ce_runtime.ike.state import RetryPolicy, conn_view  # noqa: E402
from ce_runtime.ike.vici_backend import IkeBackend, InitiateResult, ViciClient, XfrmRepair  # noqa: E402

CE = IPv4Address("192.0.2.1")
HUB_BASE = 10  # hub addresses 192.0.2.10 ...
RUN = Path("/run/ikebench")
VPN = 7


SETTINGS = CharonSettings()  # every charon of the run: what the runtime uses


def hub_address(i: int) -> IPv4Address:
    return IPv4Address(int(IPv4Address("192.0.2.0")) + HUB_BASE + i)


def inner(i: int) -> tuple[str, str]:
    """(the CE's inner address, the hub's) for tunnel ``i``."""
    return f"10.255.{i}.1", f"10.1.{i}.1"


def psk(i: int) -> bytes:
    """A per-pair key; deterministic so that both sides agree (a benchmark, not a deployment)."""
    return f"ikebench-pair-{i:04d}-".encode().ljust(32, b"k")


def ce_peers(n: int) -> list[IkePeer]:
    return [IkePeer(hub_address(i), VPN, PskAuth(psk(i))) for i in range(n)]


# -- swanctl.conf from our VICI messages -----------------------------------------------------------


def swanctl_name(name: str) -> str:
    """swanctl.conf section names cannot contain dots (they separate the settings path)."""
    return name.replace(".", "_")


def _render(section: Mapping[str, object], depth: int) -> list[str]:
    pad = "  " * depth
    out: list[str] = []
    for key, value in section.items():
        if isinstance(value, Mapping):
            out += [f"{pad}{key} {{", *_render(value, depth + 1), f"{pad}}}"]
        elif isinstance(value, list | tuple):
            out.append(f"{pad}{key} = {', '.join(str(v) for v in value)}")
        else:
            out.append(f"{pad}{key} = {value}")
    return out


def swanctl_conf(
    conns: Iterable[Mapping[str, object]], secrets: Iterable[Mapping[str, object]], start_action: str
) -> str:
    """A swanctl.conf with the same connections and PSKs as VICI ``load-conn``/``load-shared`` messages.

    Only the connection names (dots) and the CHILD_SA's ``start_action`` differ; the text contains
    the keys, so the caller writes it 0600.
    """
    connections: dict[str, object] = {}
    for message in conns:
        for name, body in message.items():
            assert isinstance(body, Mapping)
            children = body["children"]
            assert isinstance(children, Mapping)
            connections[swanctl_name(name)] = dict(body) | {
                "children": {k: dict(v) | {"start_action": start_action} for k, v in children.items()}
            }
    shared: dict[str, object] = {}
    for n, secret in enumerate(secrets, start=1):
        data = secret["data"]
        owners = secret["owners"]
        assert isinstance(data, bytes)
        assert isinstance(owners, list)
        entry: dict[str, object] = {"secret": "0x" + data.hex()}
        entry |= {f"id-{k}": owner for k, owner in enumerate(owners, start=1)}
        shared[f"ike-{n}"] = entry
    return "\n".join(_render({"connections": connections, "secrets": shared}, 0)) + "\n"


def ce_messages(peers: list[IkePeer]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """What our backend loads for ``peers`` (reqids as it assigns them: base+1, base+2, ...)."""
    conns = [connection(CE, p, IKE_REQID_BASE + 1 + k) for k, p in enumerate(peers)]
    return conns, [shared_secret(CE, p) for p in peers]


# -- inside the VM ---------------------------------------------------------------------------------


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def network(n: int) -> None:
    """Run in the VM's root namespace: namespaces ``ce`` and ``hub``, addresses, ipip links, routes."""
    sh("ip", "netns", "add", "ce")
    sh("ip", "netns", "add", "hub")
    sh("ip", "link", "add", "ce0", "netns", "ce", "type", "veth", "peer", "name", "hub0", "netns", "hub")
    ce = [f"addr add {CE}/24 dev ce0", "link set ce0 up", "link set lo up"]
    hub = ["link set hub0 up", "link set lo up"]
    for i in range(n + 1):
        (ce_in, hub_in), addr = inner(i), hub_address(i)
        hub.append(f"addr add {addr}/24 dev hub0")
        ce += [f"link add h{i} type ipip local {CE} remote {addr}", f"link set h{i} up",
               f"addr add {ce_in}/32 dev lo", f"route add {hub_in}/32 dev h{i} src {ce_in}"]  # fmt: skip
        hub += [f"link add c{i} type ipip local {addr} remote {CE}", f"link set c{i} up",
                f"addr add {hub_in}/32 dev lo", f"route add {ce_in}/32 dev c{i} src {hub_in}"]  # fmt: skip
    for ns, lines in (("ce", ce), ("hub", hub)):
        batch = RUN / f"{ns}.batch"
        batch.write_text("\n".join(lines) + "\n")
        sh("ip", "-n", ns, "-batch", str(batch))


class Pinger:
    """ICMP echo over a raw socket (this namespace): one request per call, replies matched by source."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.ident = os.getpid() & 0xFFFF
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, dst: str) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, self.ident, self.seq)
        payload = b"ikebench"
        csum = _checksum(header + payload)
        with contextlib.suppress(OSError):  # no SA yet / policy blocks: just no reply
            self.sock.sendto(struct.pack("!BBHHH", 8, 0, csum, self.ident, self.seq) + payload, (dst, 0))

    def replies(self, wait: float) -> set[str]:
        got: set[str] = set()
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return got
            data, (src, _) = self.sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            if len(data) >= ihl + 8:
                kind, _, _, ident, _ = struct.unpack_from("!BBHHH", data, ihl)
                if kind == 0 and ident == self.ident:
                    got.add(src)


def _checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))
    if len(data) % 2:
        total += data[-1] << 8
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass(slots=True)
class Bringup:
    installed: float | None  # seconds from the start to all CHILD_SAs installed (None: not all)
    traffic: float | None  # ... to an echo reply through every tunnel
    n_installed: int
    n_answered: int
    ike_sas: int  # IKE_SAs at the end (duplicates show as more than one per connection)
    loaded: float  # seconds the loading call itself took (set_peers / swanctl --load-all)
    algs: str  # what was negotiated (IKE and CHILD_SA algorithms, mode), to show both agree


class UpWatcher:
    """When each connection's CHILD_SA came up, from charon's ``child-updown`` events (own session).

    Events instead of polling ``list-sas``: a ``list-sas`` of 50 IKE_SAs in negotiation takes charon
    seconds under TCG (it checks out every IKE_SA), and a poller would slow down what it measures.
    """

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.ups: dict[str, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("could not register for charon's events")

    def _run(self) -> None:
        session = vici.Session(_connect(self.sock))
        try:
            for label, message in session.listen(["child-updown"], timeout=0.05):
                self._ready.set()  # the first tick comes after the registration
                if self._stop.is_set():
                    return
                if label is None or message.get("up") != b"yes":
                    continue
                now = time.monotonic()
                with self._lock:
                    for name in message:
                        if name != "up":
                            self.ups.setdefault(name, now)
        finally:
            with contextlib.suppress(OSError):
                session.transport.close()

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.ups)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _connect(path: Path) -> socket.socket:
    """A connected socket; blocking, so a full accept backlog (a busy charon) makes it wait."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    return sock


def wait_up(
    watcher: UpWatcher, names: dict[str, int], *, t0: float, loaded: float, timeout: float, pinger: Pinger
) -> Bringup:
    """Until every named connection carries traffic: its ``up`` event, then echoes through its link.

    "installed" is the last ``up`` event, confirmed by one ``list-sas`` (ESTABLISHED IKE_SA with an
    INSTALLED CHILD_SA for every connection); "traffic" the last echo reply.
    """
    monitor = ViciClient(watcher.sock)
    answered: set[str] = set()
    last_ping: dict[str, float] = {}
    by_dst = {inner(i)[1]: name for name, i in names.items()}
    t_installed = t_traffic = None
    listed: list[Mapping[str, object]] = []
    ups: dict[str, float] = {}
    try:
        while time.monotonic() - t0 < timeout:
            ups = {k: v for k, v in watcher.snapshot().items() if k in names}
            now = time.monotonic()
            for name in set(ups) - answered:
                if now - last_ping.get(name, -1.0) >= 0.2:
                    last_ping[name] = now
                    pinger.send(inner(names[name])[1])
            for src in pinger.replies(0.05):
                if src in by_dst:
                    answered.add(by_dst[src])
            if t_installed is None and len(ups) == len(names):
                listed = monitor.list_sas()
                if all(conn_view(listed, name).up for name in names):
                    t_installed = max(ups.values()) - t0
            if len(answered) == len(names) and t_installed is not None:
                t_traffic = time.monotonic() - t0
                break
        listed = monitor.list_sas()
    finally:
        monitor.close()
        watcher.close()
    ike = sum(1 for entry in listed for name in entry if name in names)
    return Bringup(t_installed, t_traffic, len(ups), len(answered), ike, loaded, _algs(listed, names))


def _algs(listed: list[Mapping[str, object]], names: Iterable[str]) -> str:
    """The distinct negotiated suites, e.g. ``ike=AES_GCM_16/256/PRF_HMAC_SHA2_256/CURVE_25519``."""

    def text(sa: Mapping[str, object], *keys: str) -> str:
        out = []
        for key in keys:
            value = sa.get(key, b"")
            out.append(value.decode() if isinstance(value, bytes) else str(value))
        return "/".join(out)

    wanted = set(names)
    suites: set[str] = set()
    for entry in listed:
        for name, sa in entry.items():
            if name not in wanted or not isinstance(sa, Mapping):
                continue
            suites.add("ike=" + text(sa, "encr-alg", "encr-keysize", "prf-alg", "dh-group"))
            children = sa.get("child-sas", {})
            for child in children.values() if isinstance(children, Mapping) else ():
                if isinstance(child, Mapping):
                    suites.add("child=" + text(child, "mode", "protocol", "encr-alg", "encr-keysize"))
    return ",".join(sorted(suites))


def flush(ns: str) -> None:
    for what in ("state", "policy"):
        sh("ip", "-n", ns, "xfrm", what, "flush")


class Hub:
    """The responder side: one charon in namespace ``hub`` with N+1 responder connections."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.dir = RUN / "hub"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sock(self) -> Path:
        return self.dir / "charon.vici"

    def start(self) -> None:
        flush("hub")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.sock.unlink(missing_ok=True)
        conf = self.dir / "strongswan.conf"
        conf.write_text(SETTINGS.render(self.dir))
        os.chmod(conf, 0o600)
        binary = charon_binary()
        assert binary is not None
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "STRONGSWAN_CONF": str(conf)}
        with (self.dir / "charon.out").open("ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", "hub", binary], env=env, stdout=out, stderr=out
            )
        _wait_socket(self.sock, self.proc)
        client = ViciClient(self.sock)
        try:
            for i in range(self.n + 1):
                addr = hub_address(i)
                peer = IkePeer(CE, VPN, PskAuth(psk(i)))
                message = connection(addr, peer, IKE_REQID_BASE + 1 + i)
                client.load_conn({f"hub-{i}": message[conn_name(CE)]})
                # One daemon stands in for N CEs that share the peer (the CE under test): each key
                # is owned by its own hub address, or all N would match the CE's identity.
                client.load_shared(shared_secret(addr, peer) | {"id": f"hub-psk-{i}", "owners": [str(addr)]})
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        flush("hub")


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"charon exited with {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise RuntimeError("charon's VICI socket did not appear")


class TimedVici(ViciClient):
    """:class:`ViciClient` that records when each initiation ran and what ``list-sas`` cost (profiling)."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(socket_path)
        self.t0 = time.monotonic()
        self.initiations: list[tuple[float, float, bool]] = []  # (start, end) from t0, ok
        self.listings: list[float] = []

    def initiate(self, name: str, timeout_ms: int) -> InitiateResult:
        start = time.monotonic() - self.t0
        result = super().initiate(name, timeout_ms)
        self.initiations.append((start, time.monotonic() - self.t0, result.ok))
        return result

    def list_sas(self) -> list[Mapping[str, object]]:
        start = time.monotonic()
        try:
            return super().list_sas()
        finally:
            self.listings.append(time.monotonic() - start)

    def profile(self) -> str:
        """Initiations: count, failed, first start, last end, median/max duration, peak concurrency."""
        runs = sorted(self.initiations)
        if not runs:
            return "no initiations"
        spans = [end - start for start, end, _ in runs]
        edges = sorted([(s, 1) for s, _, _ in runs] + [(e, -1) for _, e, _ in runs])
        peak = level = 0
        for _, step in edges:
            level += step
            peak = max(peak, level)
        return (
            f"init n={len(runs)} failed={sum(1 for *_, ok in runs if not ok)} first={runs[0][0]:.2f} "
            f"last_end={max(e for _, e, _ in runs):.2f} dur_med={statistics.median(spans):.2f} "
            f"dur_max={max(spans):.2f} peak={peak} list_sas n={len(self.listings)} "
            f"sum={sum(self.listings):.2f}"
        )


@dataclass(slots=True)
class Result:
    bringup: Bringup
    add: float | None  # one peer added to the running CE: seconds to its first echo reply
    detail: str


def run_ours(
    n: int, hub: Hub, pinger: Pinger, timeout: float, add: bool, *, workers: int | None = None
) -> Result:
    """Our backend on a fresh charon: set_peers(N), timed; then one more peer, timed.

    ``workers`` (profiling): another initiation pool size, with charon's threads raised to match.
    """
    flush("ce")
    hub.start()
    client_settings = SETTINGS
    if workers is not None:
        client_settings = dataclasses.replace(SETTINGS, threads=SETTINGS.threads + workers)
    charon = Charon(RUN / "ours", client_settings)
    charon.start()
    client = TimedVici(charon.socket_path)
    if workers is None:
        backend = IkeBackend(client, CE, kernel=XfrmRepair(), policy=RetryPolicy())
    else:
        backend = IkeBackend(client, CE, kernel=XfrmRepair(), policy=RetryPolicy(), workers=workers)
    backend.start(flush_stale=True)
    peers = ce_peers(n)
    names = {conn_name(p.address): i for i, p in enumerate(peers)}
    added = None
    try:
        watcher = UpWatcher(charon.socket_path)
        t0 = client.t0 = time.monotonic()
        backend.set_peers(CE, peers)
        loaded = time.monotonic() - t0
        bringup = wait_up(watcher, names, t0=t0, loaded=loaded, timeout=timeout, pinger=pinger)
        profile = client.profile()
        if add and bringup.traffic is not None:
            extra = ce_peers(n + 1)
            watcher = UpWatcher(charon.socket_path)
            t1 = time.monotonic()
            backend.set_peers(CE, extra)
            one_name = {conn_name(extra[n].address): n}
            one = wait_up(watcher, one_name, t0=t1, loaded=0.0, timeout=timeout, pinger=pinger)
            added = one.traffic
        counters = backend.counters
        detail = f"dup_terminated={counters['duplicates_terminated']} {profile}"
    finally:
        backend.stop()
        charon.stop(timeout=30)
        flush("ce")
        hub.stop()
    return Result(bringup, added, detail)


def run_swanctl(n: int, hub: Hub, pinger: Pinger, timeout: float, add: bool) -> Result:
    """The same connections from a swanctl.conf, ``swanctl --load-all`` into a fresh charon, timed alike."""
    flush("ce")
    hub.start()
    charon = Charon(RUN / "swanctl", SETTINGS)
    charon.start()
    conf_dir = RUN / "swanctl-conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(conf_dir, 0o700)
    conf = conf_dir / "swanctl.conf"
    swanctl = shutil.which("swanctl") or "/usr/sbin/swanctl"

    def load(peers: list[IkePeer]) -> float:
        conns, secrets = ce_messages(peers)
        conf.write_text(swanctl_conf(conns, secrets, "trap|start"))
        os.chmod(conf, 0o600)
        argv = [
            swanctl,
            "--load-all",
            "--noprompt",
            "--file",
            str(conf),
            "--uri",
            f"unix://{charon.socket_path}",
        ]
        t = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-800:]
            raise RuntimeError(f"swanctl failed ({done.returncode}): {tail}")
        return t

    peers = ce_peers(n)
    names = {swanctl_name(conn_name(p.address)): i for i, p in enumerate(peers)}
    added = None
    try:
        watcher = UpWatcher(charon.socket_path)
        t0 = load(peers)
        loaded = time.monotonic() - t0
        bringup = wait_up(watcher, names, t0=t0, loaded=loaded, timeout=timeout, pinger=pinger)
        if add and bringup.traffic is not None:
            extra = ce_peers(n + 1)
            watcher = UpWatcher(charon.socket_path)
            t1 = load(extra)
            one_name = {swanctl_name(conn_name(extra[n].address)): n}
            one = wait_up(watcher, one_name, t0=t1, loaded=0.0, timeout=timeout, pinger=pinger)
            added = one.traffic
    finally:
        charon.stop(timeout=30)
        flush("ce")
        hub.stop()
    return Result(bringup, added, "")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def inside(n: int, rounds: int, timeout: float, variant_workers: int | None) -> int:
    """In the CE namespace: warm-up, then ``rounds`` alternating rounds of each contender."""
    pinger = Pinger()
    hub = Hub(n)
    contenders: dict[str, Callable[[int, Hub, Pinger, float, bool], Result]] = {
        "ours": run_ours,
        "swanctl": run_swanctl,
    }
    if variant_workers is not None:
        contenders[f"ours-w{variant_workers}"] = functools.partial(run_ours, workers=variant_workers)
    results: dict[str, list[Result]] = {who: [] for who in contenders}
    warm = run_ours(2, Hub(2), pinger, timeout, add=False)
    print(f"warm-up (2 peers, not reported): traffic {_fmt(warm.bringup.traffic)} s", flush=True)
    print(f"{'round':>5} {'contender':>9} {'load s':>7} {'installed s':>12} {'traffic s':>10} "
          f"{'+1 peer s':>10} {'up':>7} {'ike_sas':>8}  detail", flush=True)  # fmt: skip
    for r in range(rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for who in order:
            res = contenders[who](n, hub, pinger, timeout, True)
            results[who].append(res)
            b = res.bringup
            print(f"{r + 1:>5} {who:>9} {b.loaded:>7.2f} {_fmt(b.installed):>12} {_fmt(b.traffic):>10} "
                  f"{_fmt(res.add):>10} {b.n_answered:>3}/{n:<3} {b.ike_sas:>8}  {b.algs} {res.detail}",
                  flush=True)  # fmt: skip
    pinger.close()
    print()
    print(f"{'figure (s)':<34} {'ours best':>9} {'median':>7} {'swanctl best':>12} {'median':>7} "
          f"{'ratio (median)':>14}")  # fmt: skip
    ok = True
    rows: list[tuple[str, Callable[[Result], float | None]]] = [
        (f"{n} peers: all CHILD_SAs installed", lambda x: x.bringup.installed),
        (f"{n} peers: traffic through all", lambda x: x.bringup.traffic),
        ("+1 peer to a running CE: traffic", lambda x: x.add),
        ("loading call returns", lambda x: x.bringup.loaded),
    ]
    for label, get in rows:
        ours = [v for v in map(get, results["ours"]) if v is not None]
        theirs = [v for v in map(get, results["swanctl"]) if v is not None]
        if len(ours) < rounds or len(theirs) < rounds:
            ok = False
        if not ours or not theirs:
            print(f"{label:<34} incomplete: ours {ours} swanctl {theirs}")
            continue
        mo, mt = statistics.median(ours), statistics.median(theirs)
        print(f"{label:<34} {min(ours):>9.2f} {mo:>7.2f} {min(theirs):>12.2f} {mt:>7.2f} {mo / mt:>13.2f}x")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=150.0, help="per bring-up, seconds")
    parser.add_argument(
        "--variant-workers",
        type=int,
        help="profiling: a third contender, ours with this many initiation workers",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--network", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.peers <= 240:
        parser.error("--peers must be 1..240 (one /24 of hub addresses)")
    if args.network:
        RUN.mkdir(parents=True, exist_ok=True)
        network(args.peers)
        return 0
    if args.inside:
        return inside(args.peers, args.rounds, args.timeout, args.variant_workers)
    sys.path.insert(0, str(REPO / "tests" / "vm"))
    import microvm  # noqa: PLC0415

    py, me = '"$CE_REPO/.venv/bin/python"', '"$CE_REPO/benchmarks/ike_bringup.py"'
    opts = f"--peers {args.peers} --rounds {args.rounds} --timeout {args.timeout}"
    if args.variant_workers:
        opts += f" --variant-workers {args.variant_workers}"
    script = f"set -e\n{py} {me} --network {opts}\nip netns exec ce {py} {me} --inside {opts}\n"
    started = time.monotonic()
    result = microvm.run_in_vm(script, timeout=1800, memory_mb=1536)
    print(result.stdout, end="")
    print(f"(VM run {time.monotonic() - started:.0f} s)")
    if result.returncode != 0:
        print(result.explain(), file=sys.stderr)
    return int(result.returncode)


if __name__ == "__main__":
    raise SystemExit(main())
