"""A fake VICI (and kernel repair port) for the IKE unit tests: calls recorded, SAs as the test says."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from ipaddress import IPv4Address

from ce_runtime.ike.config import IKE_REQID_BASE
from ce_runtime.ike.vici_backend import InitiateResult

__all__ = ["FakeKernel", "FakeVici", "sa"]


def sa(uid: int, state: str, initiator: bool, children: list[tuple[int, str, str]]) -> dict[str, object]:
    return {
        "uniqueid": str(uid).encode(),
        "state": state.encode(),
        **({"initiator": b"yes"} if initiator else {}),
        "child-sas": {
            f"ipip-{cid}": {
                "name": b"ipip",
                "uniqueid": str(cid).encode(),
                "state": cstate.encode(),
                "spi-in": f"in{cid}".encode(),
                "spi-out": spi.encode(),
            }
            for cid, cstate, spi in children
        },
    }


class FakeVici:
    """Records calls; initiations succeed or fail as told, SAs are what the test says."""

    def __init__(self, journal: list[str] | None = None) -> None:
        self.journal = journal  # shared with a fake kernel: the order of changes across both
        self.calls: list[tuple[str, object]] = []
        self.sas: list[Mapping[str, object]] = []
        self.conns: list[str] = []
        self.initiate_ok = True
        self.lock = threading.Lock()

    def load_conn(self, message: Mapping[str, object]) -> None:
        self.calls.append(("load_conn", next(iter(message))))
        if self.journal is not None:
            self.journal.append(f"load {next(iter(message))}")

    def unload_conn(self, name: str) -> None:
        self.calls.append(("unload_conn", name))
        if self.journal is not None:
            self.journal.append(f"unload {name}")

    def load_shared(self, message: Mapping[str, object]) -> None:
        self.calls.append(("load_shared", message["id"]))

    def unload_shared(self, ident: str) -> None:
        self.calls.append(("unload_shared", ident))

    def load_key(self, key_type: str, der: bytes) -> None:
        self.calls.append(("load_key", key_type))

    def load_cert(self, message: Mapping[str, object]) -> None:
        self.calls.append(("load_cert", message["type"]))
        if self.journal is not None:
            self.journal.append(f"load_cert {message['type']}")

    def flush_certs(self, kind: str) -> None:
        self.calls.append(("flush_certs", kind))

    def list_sas(self) -> list[Mapping[str, object]]:
        return list(self.sas)

    def list_conns(self) -> list[str]:
        return list(self.conns)

    def initiate(self, name: str, timeout_ms: int) -> InitiateResult:
        self.calls.append(("initiate", name))
        if self.initiate_ok:
            return InitiateResult(True, (), "")
        return InitiateResult(False, ("received AUTHENTICATION_FAILED notify error",), "failed")

    def terminate(self, selector: Mapping[str, object]) -> None:
        self.calls.append(("terminate", dict(selector)))

    def rekey(self, name: str) -> None:
        self.calls.append(("rekey", name))

    def listen(self, stop: threading.Event, handle: Callable[[str, Mapping[str, object]], None]) -> None:
        stop.wait()

    def close(self) -> None:
        pass


class FakeKernel:
    def __init__(self, reqids: Mapping[IPv4Address, int] | None = None) -> None:
        self.flushes: list[list[int]] = []
        self.policies = dict(reqids or {})  # charon's outbound policies: peer -> reqid

    def reqids(self, local: IPv4Address, owned: Callable[[int], bool]) -> dict[IPv4Address, int]:
        return {peer: reqid for peer, reqid in self.policies.items() if owned(reqid)}

    def flush(self, reqids: Callable[[int], bool]) -> int:
        probe = [IKE_REQID_BASE + 1, IKE_REQID_BASE + 2, 0xCE000007, 5]
        self.flushes.append([r for r in probe if reqids(r)])
        return 1
