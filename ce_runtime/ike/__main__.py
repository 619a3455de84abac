"""``python -m ce_runtime.ike``: IKE keying for one CE, on its own charon (or an attached one).

    python -m ce_runtime.ike --config ike.json --run-dir /run/ce-ike [--events events.jsonl]

``ike.json``::

    {"local": "192.0.2.1",
     "peers": [{"address": "192.0.2.2", "vpn_id": 7, "psk_file": "vpn7.psk"},
               {"address": "192.0.2.3", "vpn_id": 8, "auth": "cert"}],
     "cert": {"cert_file": "ce1.der", "key_file": "ce1.key.der", "key_type": "ecdsa", "ca_file": "ca.der"},
     "retry": {"min_interval": 2, "max_interval": 300, "alarm_after": 6, "establish_timeout": 30},
     "timers": {"child_rekey": 3600, "child_life": 3960, "dpd_delay": 10}}

Key files must not be readable by group or others (refused otherwise). SIGHUP re-reads the file
(peers added, changed, removed); SIGTERM stops charon, which deletes its SAs. Events are JSON lines
(``--events``, and the log); ``RUN_DIR/status.json`` holds every peer's state. If our charon dies it
is restarted, the kernel's leftovers in our reqid range are flushed and every connection reloaded.
This is the process the VM tests drive; the runtime embeds :class:`IkeBackend` the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ce_runtime.ike.charon import Charon, CharonSettings
from ce_runtime.ike.config import CertAuth, IkePeer, IkeTimers, PskAuth
from ce_runtime.ike.state import RetryPolicy, TunnelEvent
from ce_runtime.ike.vici_backend import IkeBackend, ViciClient, XfrmRepair
from options.durable import replace_file

log = logging.getLogger("ce_runtime.ike")


def read_secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path}: readable by group or others (chmod 600)")
    return path.read_bytes().strip()


def load_config(path: Path) -> tuple[IPv4Address, list[IkePeer], dict[str, Any]]:
    raw = json.loads(path.read_text())
    base = path.parent
    local = IPv4Address(raw["local"])
    cert = raw.get("cert")
    cert_auth = None
    if cert:
        cert_auth = CertAuth((base / cert["cert_file"]).read_bytes(), (base / cert["ca_file"]).read_bytes())
    peers: list[IkePeer] = []
    for entry in raw.get("peers", []):
        auth: PskAuth | CertAuth
        if entry.get("auth", "psk") == "cert":
            if cert_auth is None:
                raise ValueError(f"peer {entry['address']}: certificate auth without a 'cert' section")
            auth = cert_auth
        else:
            auth = PskAuth(read_secret(base / entry["psk_file"]))
        peers.append(IkePeer(IPv4Address(entry["address"]), int(entry.get("vpn_id", 0)), auth))
    return local, peers, raw


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config_path = Path(args.config)
        self.run_dir = Path(args.run_dir)
        self.events_file = open(args.events, "a") if args.events else None  # noqa: SIM115
        self.charon: Charon | None = None
        self.backend: IkeBackend | None = None
        self.reload = threading.Event()
        self.stopping = threading.Event()

    def _emit(self, event: TunnelEvent) -> None:
        line = json.dumps(event.as_dict(), sort_keys=True)
        print(line, flush=True)
        if self.events_file is not None:
            self.events_file.write(line + "\n")
            self.events_file.flush()

    def _start(self) -> None:
        local, peers, raw = load_config(self.config_path)
        fresh = True
        if self.args.attach:
            socket_path = Path(self.args.attach)
            fresh = False
        else:
            self.charon = Charon(self.run_dir, CharonSettings(certificates=True))
            if self.charon.adopt():
                fresh = False
                log.info("ike: adopted the running charon (pid %s)", self.charon.pid)
            else:
                took = self.charon.start()
                log.info("ike: charon started in %.2f s (pid %s)", took, self.charon.pid)
            socket_path = self.charon.socket_path
        retry = RetryPolicy(**raw.get("retry", {}))
        timers = IkeTimers(**raw.get("timers", {}))
        self.backend = IkeBackend(
            ViciClient(socket_path), local, timers=timers, policy=retry, kernel=XfrmRepair()
        )
        cert = raw.get("cert")
        if cert:
            key = read_secret(self.config_path.parent / cert["key_file"])
            self.backend.load_credentials(cert.get("key_type", "ecdsa"), key)
        self.backend.start(flush_stale=fresh)
        failed = self.backend.set_peers(local, peers)
        self._emit(TunnelEvent("configured", local, 0, time.monotonic(), f"{len(peers)} peers"))
        if failed:
            log.warning("ike: not loaded: %s", ", ".join(map(str, failed)))

    def _reload(self) -> None:
        assert self.backend is not None
        local, peers, _ = load_config(self.config_path)
        failed = self.backend.set_peers(local, peers)
        self._emit(TunnelEvent("configured", local, 0, time.monotonic(), f"{len(peers)} peers"))
        if failed:
            log.warning("ike: not loaded: %s", ", ".join(map(str, failed)))

    def _restart(self) -> None:
        log.error("ike: charon is gone: restarting it and reloading every connection")
        if self.backend is not None:
            self.backend.stop()
        if self.charon is not None:
            self.charon.kill()
        self._start()

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        self._start()
        try:
            while not self.stopping.is_set():
                self.stopping.wait(0.2)
                assert self.backend is not None
                for event in self.backend.drain_events():
                    self._emit(event)
                if self.reload.is_set():
                    self.reload.clear()
                    self._reload()
                if self.charon is not None and not self.charon.running():
                    self._restart()
                replace_file(self.run_dir / "status.json", json.dumps(self.backend.status()).encode())
        finally:
            if self.backend is not None:
                self.backend.stop()
            if self.charon is not None:
                self.charon.stop()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ce_runtime.ike", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--run-dir", required=True, help="charon's configuration, socket and log (0700)")
    parser.add_argument("--events", help="append JSON-line tunnel events here")
    parser.add_argument("--attach", metavar="SOCKET", help="use a running charon's VICI socket instead")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    supervisor = Supervisor(args)
    signal.signal(signal.SIGHUP, lambda *_: supervisor.reload.set())
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
