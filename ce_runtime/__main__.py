"""``python -m ce_runtime --config CE.json --state-dir DIR [--once]``: the runtime as a process.

The configuration is a plain "desired peers" file until the DHCP client's ``VpnPeersChanged``
events are wired in::

    {"local": "192.0.2.1", "underlay_mtu": 1500,
     "vpns": [{"vpn_id": 7, "peers": ["192.0.2.2"], "secret_file": "vpn7.key",
               "routes": [["10.2.0.0/24", "192.0.2.2"]], "table": 254}]}

``"vrf": "NAME"`` (with ``"table"`` other than 254) puts the VPN's tunnels into that VRF (section 2.2).

``secret_file`` holds the VPN's pre-shared secret in hex and must not be readable by others.

IKE keying (docs/runtime.md) takes the same fields as ``runtime.toml``: per VPN ``"keying": "ike"``
with ``psk_file`` and/or ``pairs`` (``[{"peer": ..., "psk_file": ...}]``) or ``cert_file``,
``key_file``, ``ca_file``; an optional top-level ``"ike"`` object (``charon``, ``socket``,
``run_dir``, ``on_exit``, timers). Our charon's files then live in ``STATE_DIR/ike``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ce_runtime.ike.state import RetryPolicy
from ce_runtime.ike.wiring import IkeKeying, IkeSettingsError, ike_settings, restrict, tunnel_hook, vpn_auth
from ce_runtime.keying import REKEY_PACKETS, EpochFile, StaticKeying
from ce_runtime.runtime import Backoff, Reconciler, RuntimeConfig, VpnConfig, link_name

log = logging.getLogger("ce_runtime")


class ExecHooks:
    """Runs ``hook EVENT LINK VPN PEER`` per tunnel event within ``timeout``; failures are only logged."""

    def __init__(self, path: str | None, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.failures = 0

    def tunnel(self, event: str, link: str, vpn_id: int, peer: IPv4Address) -> None:
        log.info("ce_runtime: tunnel %s %s (vpn %d, peer %s)", event, link, vpn_id, peer)
        if not self.path:
            return
        try:
            subprocess.run(  # noqa: S603 - the operator's own hook, arguments are ours
                [self.path, event, link, str(vpn_id), str(peer)],
                timeout=self.timeout,
                check=True,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.failures += 1
            log.warning("ce_runtime: hook %s %s failed: %s", event, link, exc)


def _secret(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SystemExit(f"{path}: the VPN secret must not be accessible to group or others (chmod 600)")
    return bytes.fromhex(path.read_text().strip())


def load_config(path: Path) -> tuple[RuntimeConfig, dict[int, bytes]]:
    """The desired peers and the static VPNs' secrets (IKE VPNs: :func:`load_ike`)."""
    raw = json.loads(path.read_text())
    vpns: list[VpnConfig] = []
    secrets: dict[int, bytes] = {}
    for v in raw.get("vpns", []):
        vpn_id = int(v["vpn_id"])
        ike = v.get("keying", "static") == "ike"
        vpns.append(
            VpnConfig(
                vpn_id=vpn_id,
                peers=frozenset(IPv4Address(p) for p in v.get("peers", [])),
                routes=tuple((IPv4Network(r[0]), IPv4Address(r[1])) for r in v.get("routes", [])),
                table=int(v.get("table", 254)),
                vrf=v.get("vrf"),
                ike=ike,
            )
        )
        if not ike:
            secrets[vpn_id] = _secret(path.parent / v["secret_file"])
    config = RuntimeConfig(
        local=IPv4Address(raw["local"]), vpns=tuple(vpns), underlay_mtu=int(raw.get("underlay_mtu", 1500))
    )
    return config, secrets


def load_ike(path: Path, state_dir: Path) -> IkeKeying | None:
    """IKE keying for the config's ``"keying": "ike"`` VPNs (None if there are none)."""
    from ce_runtime.ike.charon import Charon, CharonSettings  # noqa: PLC0415
    from ce_runtime.ike.vici_backend import ViciClient, XfrmRepair  # noqa: PLC0415

    raw = json.loads(path.read_text())

    def rel(value: object) -> Path:
        p = Path(str(value))
        return p if p.is_absolute() else path.parent / p

    try:
        auths = {
            int(v["vpn_id"]): vpn_auth(v, f"vpns[{n}] (vpn_id {v['vpn_id']})", rel)
            for n, v in enumerate(raw.get("vpns", []))
            if v.get("keying", "static") == "ike"
        }
        if not auths:
            return None
        settings = ike_settings(raw.get("ike", {}), "ike", rel, state_dir)
    except IkeSettingsError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    certificates = any(a.cert is not None for a in auths.values())
    charon = None if settings.attach else Charon(settings.run_dir, CharonSettings(certificates=certificates))
    return IkeKeying(settings, auths, RetryPolicy(), charon=charon, connect=ViciClient, kernel=XfrmRepair())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ce_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="epochs file (0600) lives here")
    parser.add_argument("--once", action="store_true", help="reconcile once and exit (status 1 on failures)")
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--hook", help="executable run on tunnel up/down/alarm")
    parser.add_argument(
        "--rekey-packets",
        type=int,
        default=REKEY_PACKETS,
        help="move an outbound SA to the next epoch once it carried this many packets",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    from ce_runtime.kernel import NetlinkKernel  # noqa: PLC0415 - keeps --help free of netlink

    config, secrets = load_config(args.config)
    args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(args.state_dir, 0o700)
    keying = StaticKeying(
        secrets, EpochFile(args.state_dir / "epochs.json"), rekey_packets=args.rekey_packets
    )
    ike = load_ike(args.config, args.state_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # through the finally below
    hooks = ExecHooks(args.hook)
    up: set[IPv4Address] = set()
    vpn_of = {p: v.vpn_id for v in config.vpns for p in v.peers}
    with NetlinkKernel() as kernel:
        reconciler = Reconciler(kernel, keying, hooks, backoff=Backoff())
        try:
            while True:
                keyed = config if ike is None else ike.before(config)
                assert keyed is not None
                report = reconciler.reconcile(keyed, time.monotonic())
                if ike is not None:
                    ike.after(config, report)
                for op in report.applied:
                    log.info("ce_runtime: applied %s", _describe(op))
                for op, why in report.failed:
                    log.warning("ce_runtime: FAILED %s: %s", _describe(op), why)
                if args.once:
                    return 1 if report.failed else 0
                deadline = time.monotonic() + args.interval
                while time.monotonic() < deadline:  # IKE events as they come, a round per interval
                    for event in () if ike is None else ike.events():
                        hook = tunnel_hook(event, up)
                        if hook is not None:
                            hooks.tunnel(hook, link_name(event.peer), vpn_of.get(event.peer, -1), event.peer)
                    if ike is not None and ike.lost():
                        break
                    time.sleep(min(1.0, args.interval))
        finally:
            if ike is not None:
                stop = ike.settings.on_exit == "stop"
                if stop:  # the IKE peers' links first: their trap policies go with charon
                    reconciler.reconcile(restrict(config, ()), time.monotonic())
                ike.close(stop=stop)


def _describe(op: object) -> str:
    """One line per operation; SA keys are excluded from the dataclass repr."""
    return repr(op)


if __name__ == "__main__":
    raise SystemExit(main())
