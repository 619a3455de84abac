"""Keying behind an interface; the first implementation needs no daemon ("static" keying).

:class:`Keying` hands the reconciler the SAs a pair of CEs should have. IKEv2 through strongSwan
(a later issue) will implement the same interface by asking the daemon instead of deriving.

Static keying (threat model and limits: docs/runtime.md): every key is derived with HKDF-SHA256
from the VPN's pre-shared secret, the VPN id, the sender's and receiver's provider addresses, the
direction (sender first) and an *epoch* of that direction. AES-GCM must never see the same
(key, nonce) twice; the kernel's ESP sequence number (the IV source of rfc4106 in Linux) starts
again at 1 whenever an SA is added, so an outbound (key, SPI) is installed at most once:

- the sender keeps, per peer, the epoch it may have installed, in a 0600 file written with
  write/fsync/rename/fsync (``flush``, once per round) *before* an SA of that epoch reaches the kernel;
- an outbound SA that is in the kernel with exactly the derived key is kept (its sequence number
  continues); one that is missing (reboot, deleted by hand, expired) is installed only under the
  next epoch, never again under the same one;
- the receiver cannot be told, so it installs inbound SAs for a window of epochs
  ``[seen, seen + window]``; when the kernel's counters show packets on a higher one, ``seen``
  moves up (persisted too) and the window slides.

Rekeying: the ESP sequence number is 32 bits (no ESN), so an outbound SA can carry at most
2**32 - 1 packets; Linux then refuses to send on it. When the kernel's counter of the outbound
SA (dumped every round) reaches ``rekey_packets``, the sender moves that direction to the next
epoch (:func:`needs_rekey`): the new SA is planned beside the old one, which the planner removes
only after the new one is in (make-before-break); the receiver's window already holds the next
epochs and slides when it sees traffic on one. Every outbound SA also carries a hard packet
limit (:data:`HARD_PACKETS`) below 2**32: a missed rekey makes the kernel expire the SA, and the
next round installs the next epoch, never a wrapped sequence number.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ce_runtime.xfrm import SaSpec
from options.durable import replace_file

__all__ = [
    "HARD_PACKETS",
    "REKEY_PACKETS",
    "SEQ_LIMIT",
    "EpochFile",
    "Keying",
    "PairSas",
    "StaticKeying",
    "derive",
    "needs_rekey",
]

log = logging.getLogger("ce_runtime")

KEY_LEN: Final = 36  # AES-256 key + 4-octet salt (RFC 4106 section 8.1)
SALT: Final = b"ce-autoconf static ESP keying v1"
#: Packets an SA can carry: the 32-bit ESP sequence number starts at 1 and must not wrap (RFC 4303).
SEQ_LIMIT: Final = (1 << 32) - 1
#: The kernel expires an outbound SA at this count (the safety net under a missed rekey).
HARD_PACKETS: Final = SEQ_LIMIT - (1 << 20)
#: By default an outbound SA moves to the next epoch once it carried this many packets (3/4 of the
#: sequence space: at a million packets per second the 2**30 left last about 18 minutes, against
#: a reconcile round every 10 s).
REKEY_PACKETS: Final = 3 << 30


def needs_rekey(packets: int, threshold: int) -> bool:
    """Whether an outbound SA that carried ``packets`` must make way for the next epoch."""
    return packets >= threshold


@dataclass(frozen=True, slots=True)
class PairSas:
    """The SAs one CE wants for one peer: one outbound, one or more inbound (epoch window)."""

    outbound: SaSpec
    inbound: tuple[SaSpec, ...]


class Keying(Protocol):
    def sas_for(
        self, vpn_id: int, local: IPv4Address, peer: IPv4Address, reqid: int, actual: Collection[SaSpec]
    ) -> PairSas:
        """The SAs to hold for this pair, given the SAs the kernel holds now."""
        ...

    def flush(self) -> None:
        """Make durable whatever ``sas_for`` decided; called before any of its SAs reach the kernel."""
        ...


def derive(
    secret: bytes, vpn_id: int, sender: IPv4Address, receiver: IPv4Address, epoch: int
) -> tuple[bytes, int]:
    """(key, SPI) of the direction ``sender`` -> ``receiver`` at ``epoch``.

    The SPI has its top bit set (never a reserved value below 256) and 31 derived bits; the
    receiver keys inbound SAs by (its address, SPI), so two senders colliding is possible with
    probability about n**2 / 2**32 for n peers: the adapter then reports EEXIST for that peer.
    """
    if not 0 <= epoch < 1 << 64:
        raise ValueError(f"epoch {epoch}")
    info = vpn_id.to_bytes(4, "big") + sender.packed + receiver.packed + epoch.to_bytes(8, "big")
    okm = HKDF(algorithm=hashes.SHA256(), length=KEY_LEN + 4, salt=SALT, info=info).derive(secret)
    return okm[:KEY_LEN], 0x80000000 | (int.from_bytes(okm[KEY_LEN:], "big") & 0x7FFFFFFF)


class EpochFile:
    """``{"out": {pair: epoch}, "seen": {pair: epoch}}`` in a 0600 file, replaced atomically and fsynced."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.out: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        self.out = {str(k): int(v) for k, v in raw.get("out", {}).items()}
        self.seen = {str(k): int(v) for k, v in raw.get("seen", {}).items()}

    def save(self) -> None:
        replace_file(self.path, json.dumps({"out": self.out, "seen": self.seen}, sort_keys=True).encode())


class StaticKeying:
    """HKDF keys from per-VPN secrets; epochs persisted in ``epochs`` (see the module docstring)."""

    def __init__(
        self,
        secrets: dict[int, bytes],
        epochs: EpochFile,
        window: int = 3,
        rekey_packets: int = REKEY_PACKETS,
    ) -> None:
        for vpn_id, secret in secrets.items():
            if len(secret) < 16:
                raise ValueError(f"VPN {vpn_id}: a secret of at least 16 octets is required")
        if not 0 < rekey_packets < HARD_PACKETS:
            raise ValueError(f"rekey_packets {rekey_packets}: between 1 and {HARD_PACKETS - 1}")
        self._secrets = dict(secrets)
        self._epochs = epochs
        self.window = window
        self.rekey_packets = rekey_packets
        self.rekeys = 0  # outbound SAs moved to the next epoch because of their packet count
        self._dirty = False
        self._index: tuple[frozenset[SaSpec], dict[SaSpec, SaSpec], dict[tuple[IPv4Address, int], int]] | None
        self._index = None

    def flush(self) -> None:
        """One write + fsync for all epochs decided since the last flush (before the kernel sees them)."""
        if self._dirty:
            self._epochs.save()
            self._dirty = False

    def __repr__(self) -> str:
        return f"StaticKeying(vpns={sorted(self._secrets)}, window={self.window})"  # never the secrets

    def _sa(self, vpn_id: int, sender: IPv4Address, receiver: IPv4Address, epoch: int, reqid: int) -> SaSpec:
        # The same limit at both ends (both compute the same spec); the receiver's count never
        # exceeds the sender's, so it is the sender's SA that reaches it.
        key, spi = derive(self._secrets[vpn_id], vpn_id, sender, receiver, epoch)
        return SaSpec(src=sender, dst=receiver, spi=spi, reqid=reqid, key=key, hard_packets=HARD_PACKETS)

    def _indexed(
        self, actual: Collection[SaSpec]
    ) -> tuple[dict[SaSpec, SaSpec], dict[tuple[IPv4Address, int], int]]:
        """The dumped SAs by spec (values carry the kernel's counters) and packets by (dst, SPI).

        Built once per round: ``desired_state`` passes the same frozenset for every peer, and
        rebuilding both per peer made a round with 500 peers (2,500 SAs) quadratic.
        """
        if self._index is not None and self._index[0] is actual:
            return self._index[1], self._index[2]
        present = {sa: sa for sa in actual}
        counters = {(sa.dst, sa.spi): sa.packets for sa in actual}
        if isinstance(actual, frozenset):  # immutable: safe to reuse while it is the one passed
            self._index = (actual, present, counters)
        return present, counters

    def sas_for(
        self, vpn_id: int, local: IPv4Address, peer: IPv4Address, reqid: int, actual: Collection[SaSpec]
    ) -> PairSas:
        if vpn_id not in self._secrets:
            raise KeyError(f"no secret for VPN {vpn_id}")
        pair = f"{vpn_id}/{peer}"
        present, counters = self._indexed(actual)
        epoch = self._epochs.out.get(pair)
        outbound = None if epoch is None else self._sa(vpn_id, local, peer, epoch, reqid)
        installed = None if outbound is None else present.get(outbound)
        rekey = installed is not None and needs_rekey(installed.packets, self.rekey_packets)
        if installed is None or rekey:
            # Missing (or never installed), or its sequence numbers running out: a fresh epoch, on
            # disk before the kernel sees its key. A rekeyed SA stays until the new one is in.
            epoch = 0 if epoch is None else epoch + 1
            self._epochs.out[pair] = epoch
            self._dirty = True
            outbound = self._sa(vpn_id, local, peer, epoch, reqid)
            if rekey:
                self.rekeys += 1
                log.info("ce_runtime: rekey of VPN %d to %s: epoch %d", vpn_id, peer, epoch)
        assert outbound is not None

        seen = self._epochs.seen.get(pair, 0)
        window = [self._sa(vpn_id, peer, local, seen + i, reqid) for i in range(self.window + 1)]
        used = [i for i, sa in enumerate(window) if counters.get((sa.dst, sa.spi), 0) > 0]
        if used and used[-1] > 0:
            seen += used[-1]
            self._epochs.seen[pair] = seen
            self._dirty = True
            window = [self._sa(vpn_id, peer, local, seen + i, reqid) for i in range(self.window + 1)]
        return PairSas(outbound=outbound, inbound=tuple(window))
