"""Network namespaces for ``ce-autoconf demo`` and the tests: uniquely named, linked by veth
pairs (and a bridge), always removed.

Nothing here touches the host's interfaces: every link is created inside a namespace of
this run (``ip -n NS link add ... peer ... netns OTHER``), and removing a namespace
removes its links. Names are a prefix (``cea<pid>`` by default) plus a counter, so parallel
runs never collide and leftovers of a crashed run are recognisable (``ip netns list | grep
^cea``); :func:`remove_stale` removes those whose process is gone.

Helpers: run or start a process inside a namespace with a bounded lifetime, enter a
namespace from one Python thread (to run the asyncio server in-process), wait for a
condition with a deadline, capture packets with tcpdump.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Capture",
    "Lab",
    "LoopThread",
    "Namespace",
    "NetnsUnavailableError",
    "Process",
    "netns_unavailable_reason",
    "remove_stale",
    "wait_for",
]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_counter = itertools.count()
_IP = shutil.which("ip") or "/usr/sbin/ip"


class NetnsUnavailableError(RuntimeError):
    """Network namespaces cannot be created here (no root, no ``ip``, a seccomp profile)."""


def _run(argv: Sequence[str], timeout: float = 10.0) -> str:
    # Our own argv (ip, and what the demo or a test starts), never a shell string.
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, list(argv), done.stdout, done.stderr)
    return done.stdout


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or ``None`` if a probe namespace could be made."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(_IP).exists():
        return "iproute2's ip is not installed"
    name = f"cea{os.getpid()}probe{next(_counter)}"
    try:
        _run([_IP, "netns", "add", name])
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else exc
        return f"cannot create a network namespace: {detail}"
    with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        _run([_IP, "netns", "del", name])
    return None


def wait_for(
    condition: Callable[[], T | None], timeout: float, *, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError at the deadline.

    For external processes only (a log line, a lease file): in-process code has a fake clock.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout:.1f} s")
        time.sleep(interval)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def remove_stale(stem: str) -> list[str]:
    """Remove namespaces named ``<stem><pid>...`` whose process ``pid`` no longer runs
    (what a run killed by SIGKILL leaves behind), killing what still runs inside them.
    Returns their names."""
    try:
        listing = _run([_IP, "netns", "list"])
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
        return []
    removed: list[str] = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        digits = ""
        for char in name.removeprefix(stem) if name.startswith(stem) else "":
            if not char.isdigit():
                break
            digits += char
        if not digits or int(digits) == os.getpid() or _alive(int(digits)):
            continue
        with contextlib.suppress(subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired):
            for pid in _run([_IP, "netns", "pids", name]).split():
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run([_IP, "netns", "del", name])
            removed.append(name)
    return removed


@dataclass
class Process:
    """A process started inside a namespace; output goes to a log file read back for assertions."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: tuple[str, ...]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.running():
            self.popen.terminate()
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int:
        """SIGKILL the process (its own process group: ``ip netns exec`` and what it runs)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait(10)


@dataclass
class Namespace:
    """One network namespace of a :class:`Lab`."""

    name: str
    lab: Lab

    def argv(self, *argv: str) -> list[str]:
        return [_IP, "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 20.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(  # noqa: S603 - an argv, never a shell string
            self.argv(*argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        return done

    def ip(self, *args: str) -> str:
        return _run([_IP, "-n", self.name, *args])

    def start(
        self,
        *argv: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> Process:
        """Start ``argv`` in this namespace (optionally under ``wrap``, e.g. ``unshare -m``).

        The process gets its own process group and is killed when the lab is torn down.
        """
        log_path = self.lab.workdir / f"{name or Path(argv[0]).name}-{next(_counter)}.log"
        full = (*self.argv(*wrap, *argv),)
        with log_path.open("wb") as out:
            popen = subprocess.Popen(  # noqa: S603 - an argv, never a shell string
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        process = Process(popen, log_path, full)
        self.lab.processes.append(process)
        return process

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Move the calling THREAD into this namespace (setns is per thread) and back."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}")
            try:
                yield
            finally:
                if libc.setns(own, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(own)
            os.close(target)


@dataclass
class Capture:
    """tcpdump writing a pcap of DHCP traffic on one interface of one namespace."""

    process: Process
    path: Path

    def stop(self) -> Path:
        # SIGINT makes tcpdump flush and close the file properly.
        self.process.signal(signal.SIGINT)
        try:
            self.process.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.path


@dataclass
class Lab:
    """Namespaces, links and processes of one test; :meth:`close` removes them all."""

    workdir: Path
    prefix: str = field(default_factory=lambda: f"cea{os.getpid()}")
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    _links: Iterator[int] = field(default_factory=itertools.count)

    def namespace(self, role: str = "") -> Namespace:
        name = f"{self.prefix}{role[:8]}{next(_counter)}"
        try:
            _run([_IP, "netns", "add", name])
        except subprocess.CalledProcessError as exc:
            raise NetnsUnavailableError(exc.stderr.strip()) from exc
        ns = Namespace(name, self)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(  # noqa: PLR0917 - the tests' positional calls
        self,
        a: Namespace,
        b: Namespace,
        a_name: str = "eth0",
        b_name: str = "eth0",
        a_address: str | None = None,
        b_address: str | None = None,
    ) -> None:
        """A veth pair between two namespaces, created inside ``a`` (never in the host's).

        Returns once both ends are operationally up: until the kernel's link watcher has run
        (asynchronously, later on a loaded machine) a veth still has its no-op qdisc and
        silently drops what is sent, such as a test's first DHCPDISCOVER.
        """
        a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
        for ns, ifname, address in ((a, a_name, a_address), (b, b_name, b_address)):
            if address is not None:
                ns.ip("addr", "add", address, "dev", ifname)
            ns.ip("link", "set", ifname, "up")
        for ns, ifname in ((a, a_name), (b, b_name)):
            wait_for(
                lambda: " state UP " in ns.ip("-o", "link", "show", "dev", ifname),  # noqa: B023
                10,
                what=f"{ifname} in {ns.name} up",
            )

    def bridge(self, switch: Namespace, name: str = "br0") -> None:
        switch.ip("link", "add", name, "type", "bridge")
        switch.ip("link", "set", name, "up")

    def attach(
        self, switch: Namespace, host: Namespace, ifname: str = "eth0", address: str | None = None
    ) -> str:
        """Plug ``host`` into the bridge of ``switch`` with a new veth pair; returns the port name."""
        port = f"p{next(self._links)}"
        self.link(host, switch, ifname, port, a_address=address)
        switch.ip("link", "set", port, "master", "br0")
        return port

    @staticmethod
    def neighbour(ns: Namespace, address: str, lladdr: str, dev: str = "eth0") -> None:
        ns.ip("neigh", "replace", address, "lladdr", lladdr, "dev", dev, "nud", "permanent")

    @staticmethod
    def mac(ns: Namespace, dev: str = "eth0") -> str:
        parts = ns.ip("-o", "link", "show", "dev", dev).split()
        return parts[parts.index("link/ether") + 1]

    @staticmethod
    def address(ns: Namespace, dev: str = "eth0") -> IPv4Interface | None:
        out = ns.ip("-4", "-o", "addr", "show", "dev", dev)
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                return IPv4Interface(parts[parts.index("inet") + 1])
        return None

    def capture(self, ns: Namespace, dev: str = "eth0", name: str = "capture", filt: str = "udp") -> Capture:
        """Start tcpdump: immediate mode (no ring-buffer block delay) and packet-buffered output, so
        what crossed the link before a stop or a kill -9 elsewhere is in the file."""
        path = self.workdir / f"{name}.pcap"
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        argv = [tcpdump, "-i", dev, "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "0", "-w", str(path)]
        process = ns.start(*argv, filt, name="tcpdump")
        # tcpdump says "listening on" once the capture is open: nothing is lost after that.
        wait_for(lambda: "listening on" in process.log() or not process.running(), 10, what="tcpdump start")
        if not process.running():
            raise RuntimeError(f"tcpdump failed: {process.log()}")
        return Capture(process, path)

    def close(self) -> None:
        errors: list[str] = []
        for process in reversed(self.processes):
            try:
                process.kill()
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{process.argv[:6]}: {exc}")
        for ns in reversed(self.namespaces):
            try:
                _run([_IP, "netns", "del", ns.name])
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                errors.append(f"netns del {ns.name}: {exc}")
        self.processes.clear()
        self.namespaces.clear()
        if errors:
            raise RuntimeError("lab clean-up failed: " + "; ".join(errors))


class LoopThread:
    """An asyncio loop in a thread that lives inside a namespace: the server in-process.

    Sockets and netlink handles created by coroutines submitted with :meth:`call` belong to
    ``ns``; the test thread stays in the host's namespace.
    """

    def __init__(self, ns: Namespace) -> None:
        self._ns = ns
        self._ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"loop-{ns.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("event loop thread did not start")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            with self._ns.entered():
                loop = asyncio.new_event_loop()
                self.loop = loop
                self._ready.set()
                try:
                    loop.run_forever()
                finally:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.close()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
