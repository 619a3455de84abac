"""Our own charon instance: its own strongswan.conf, VICI socket and plugin set, started and watched.

One instance per CE (per network namespace: UDP 500/4500 do not clash across namespaces). It is
started as ``charon-systemd`` (which writes no pid file, unlike ``/usr/lib/ipsec/charon``) with
``STRONGSWAN_CONF`` pointing at a file in the instance's private run directory (0700). Facts this
relies on were measured in the micro-VM (../shared/notes/strongswan.md): the ``kdf`` plugin is
required with Debian 12's OpenSSL 3; routes are not installed (``install_routes = no``); Debian's
AppArmor profile for charon only allows the default paths (a host with profiles loaded needs the
profile adjusted or complained; no profiles are loaded in the test VM).

Nothing secret goes through this module: keys are loaded over VICI, never written to files. The
log (if any) is at levels that never print keying material (``ike``/``cfg`` <= 2; level 4 would).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CERT_PLUGINS", "PSK_PLUGINS", "Charon", "CharonError", "CharonSettings", "charon_binary"]

# The minimal set for PSK (measured); certificates add X.509 parsing and key formats.
PSK_PLUGINS: Final = ("nonce", "openssl", "kdf", "kernel-netlink", "socket-default", "vici")
# "revocation": CRLs loaded over VICI checked at authentication (ce_runtime.ike.revocation).
CERT_PLUGINS: Final = ("x509", "pubkey", "pkcs1", "pkcs8", "pem", "constraints", "revocation")
BINARIES: Final = ("/usr/sbin/charon-systemd", "/usr/lib/ipsec/charon-systemd")


class CharonError(RuntimeError):
    pass


def charon_binary() -> str | None:
    for candidate in BINARIES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("charon-systemd")


@dataclass(frozen=True, slots=True)
class CharonSettings:
    """What goes into the instance's strongswan.conf."""

    certificates: bool = True
    # Retransmissions: 1 s, then x1.4, 4 tries (~6.5 s to "giving up"): failures reach the
    # backend's own retry and backoff quickly instead of charon's default ~165 s.
    retransmit_timeout: float = 1.0
    retransmit_base: float = 1.4
    retransmit_tries: int = 4
    # A hub with many peers trips the DoS protection's defaults (10 half-open, 3 per IP, 5 blocked).
    cookie_threshold: int = 1000
    cookie_threshold_ip: int = 100
    block_threshold: int = 100
    threads: int = 16
    log_level: int = 2  # <= 2: no keying material in the log

    def render(self, run_dir: Path) -> str:
        if not -1 <= self.log_level <= 2:
            raise ValueError("log_level above 2 could print keying material")
        plugins = PSK_PLUGINS + (CERT_PLUGINS if self.certificates else ())
        lvl = self.log_level
        return f"""# Written by ce_runtime.ike for its own charon instance; not used by any other daemon.
charon {{
  load = {" ".join(plugins)}
  install_routes = no
  install_virtual_ip = no
  routing_table = 0
  retransmit_timeout = {self.retransmit_timeout}
  retransmit_base = {self.retransmit_base}
  retransmit_tries = {self.retransmit_tries}
  cookie_threshold = {self.cookie_threshold}
  cookie_threshold_ip = {self.cookie_threshold_ip}
  block_threshold = {self.block_threshold}
  threads = {self.threads}
  plugins {{
    vici {{
      socket = unix://{run_dir / "charon.vici"}
    }}
  }}
  filelog {{
    ce {{
      path = {run_dir / "charon.log"}
      default = 1
      ike = {lvl}
      cfg = {lvl}
      knl = {lvl}
      enc = 0
      net = 0
    }}
  }}
}}
"""


class Charon:
    """Start, watch, stop (or kill) one charon instance whose files live in ``run_dir``."""

    def __init__(self, run_dir: str | os.PathLike[str], settings: CharonSettings | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.settings = settings or CharonSettings()
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "charon.vici"

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "strongswan.conf"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "charon.pid"

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._adopted

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._adopted is not None and _alive(self._adopted)

    def adopt(self) -> bool:
        """Take over the instance a previous (killed) supervisor left running in ``run_dir``, if any.

        True if one runs and answers on its socket: its SAs are live and must not be flushed.
        """
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return False
        if not _alive(pid) or not _is_charon(pid) or not self._connectable():
            return False
        self._adopted = pid
        return True

    def start(self, timeout: float = 30.0) -> float:
        """Write the configuration, start charon, wait for its VICI socket; the seconds it took."""
        binary = charon_binary()
        if binary is None:
            raise CharonError("charon-systemd is not installed (Debian: charon-systemd)")
        if self.running():
            raise CharonError("already running")
        started = time.monotonic()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket of a killed instance
        self.conf_path.write_text(self.settings.render(self.run_dir))
        os.chmod(self.conf_path, 0o600)
        (self.run_dir / "charon.log").touch(mode=0o600)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "STRONGSWAN_CONF": str(self.conf_path)}
        out = (self.run_dir / "charon.out").open("ab")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - our own binary path, no shell
                [binary], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            out.close()
        self.pid_path.write_text(f"{self._proc.pid}\n")
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = (self.run_dir / "charon.out").read_text(errors="replace")[-800:]
                raise CharonError(f"charon exited with {self._proc.returncode}: {tail}")
            if self._connectable():
                return time.monotonic() - started
            time.sleep(0.05)
        self.kill()
        raise CharonError(f"charon's VICI socket did not appear within {timeout} s")

    def _connectable(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (charon deletes its IKE_SAs, which tells the peers) and wait; SIGKILL after ``timeout``."""
        if self._adopted is not None:
            _terminate_pid(self._adopted, timeout)
            self._adopted = None
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def kill(self) -> None:
        if self._adopted is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._adopted, signal.SIGKILL)
            self._adopted = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _is_charon(pid: int) -> bool:
    try:
        return "charon" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def _terminate_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
