"""The VPN directory: VPNs, CEs, their memberships and RFC 3118 keys, held in memory.

Changes come from management and are returned as store writes; the peers of a CE are
derived, never stored: the addresses of the other members of each of its VPNs, from
their static address or their active lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address

from dhcp_server.actions import CeDelete, CeWrite, SecretDelete, SecretWrite, VpnDelete, VpnWrite, Write
from dhcp_server.model import CeRecord, ClientKey, VpnRecord
from options.rfc3118 import MacKey

__all__ = ["Directory", "DirectoryError"]


class DirectoryError(ValueError):
    """A management request that contradicts the directory (unknown VPN, duplicate name...)."""


class Directory:
    __slots__ = ("_by_client", "_by_secret", "_ces", "_macs", "_members", "_secrets", "_vpns")

    def __init__(
        self,
        vpns: Iterable[VpnRecord] = (),
        ces: Iterable[CeRecord] = (),
        secrets: dict[int, bytes] | None = None,
    ) -> None:
        self._vpns: dict[int, VpnRecord] = {v.vpn_id: v for v in vpns}
        self._ces: dict[str, CeRecord] = {}
        self._by_client: dict[ClientKey, CeRecord] = {}
        self._by_secret: dict[int, CeRecord] = {}
        # VPN ID -> its members by name: an INFORM reads one VPN's members, never every CE.
        self._members: dict[int, dict[str, CeRecord]] = {}
        self._secrets: dict[int, bytes] = dict(secrets or {})
        self._macs: dict[int, MacKey] = {sid: MacKey(key) for sid, key in self._secrets.items()}
        for ce in ces:
            self._index(ce)

    def __repr__(self) -> str:
        return f"Directory({len(self._vpns)} VPNs, {len(self._ces)} CEs, {len(self._secrets)} keys)"

    def _index(self, ce: CeRecord) -> None:
        self._ces[ce.name] = ce
        for vpn_id in ce.vpns:
            self._members.setdefault(vpn_id, {})[ce.name] = ce
        if ce.client is not None:
            self._by_client[ce.client] = ce
        if ce.secret_id is not None:
            self._by_secret[ce.secret_id] = ce

    def _unindex(self, ce: CeRecord) -> None:
        del self._ces[ce.name]
        for vpn_id in ce.vpns:
            members = self._members[vpn_id]
            del members[ce.name]
            if not members:
                del self._members[vpn_id]
        if ce.client is not None:
            self._by_client.pop(ce.client, None)
        if ce.secret_id is not None:
            self._by_secret.pop(ce.secret_id, None)

    # -- queries -------------------------------------------------------------------

    @property
    def vpns(self) -> dict[int, VpnRecord]:
        return dict(self._vpns)

    @property
    def ces(self) -> dict[str, CeRecord]:
        return dict(self._ces)

    def ce_by_client(self, client: ClientKey) -> CeRecord | None:
        return self._by_client.get(client)

    def ce_by_secret(self, secret_id: int) -> CeRecord | None:
        return self._by_secret.get(secret_id)

    def key(self, secret_id: int) -> bytes | None:
        return self._secrets.get(secret_id)

    def mac_key(self, secret_id: int) -> MacKey | None:
        """The key of ``secret_id`` ready for HMAC-MD5 (see :class:`options.rfc3118.MacKey`)."""
        return self._macs.get(secret_id)

    def vpn(self, vpn_id: int) -> VpnRecord | None:
        return self._vpns.get(vpn_id)

    def members(self, vpn_id: int) -> list[CeRecord]:
        return list(self._members.get(vpn_id, {}).values())

    def peers_of(
        self, ce: CeRecord, address_of: Callable[[CeRecord], IPv4Address | None]
    ) -> dict[int, set[IPv4Address]]:
        """For each VPN of ``ce``: the current addresses of its other members."""
        own = address_of(ce)
        result: dict[int, set[IPv4Address]] = {}
        for vpn_id in sorted(ce.vpns):
            if vpn_id not in self._vpns:
                continue
            peers = result.setdefault(vpn_id, set())
            for other in self._members.get(vpn_id, {}).values():
                if other.name == ce.name:
                    continue
                address = address_of(other)
                if address is not None and address != own:
                    peers.add(address)
        return result

    # -- changes (each returns the writes to commit) ---------------------------------

    def put_vpn(self, vpn: VpnRecord) -> list[Write]:
        self._vpns[vpn.vpn_id] = vpn
        return [VpnWrite(vpn)]

    def delete_vpn(self, vpn_id: int) -> list[Write]:
        if vpn_id not in self._vpns:
            raise DirectoryError(f"no VPN {vpn_id}")
        if self.members(vpn_id):
            raise DirectoryError(f"VPN {vpn_id} still has members; remove them first")
        del self._vpns[vpn_id]
        return [VpnDelete(vpn_id)]

    def put_ce(self, ce: CeRecord, key: bytes | None = None) -> list[Write]:
        """Add or replace a CE; ``key`` (with ``ce.secret_id``) sets its RFC 3118 key."""
        for vpn_id in ce.vpns:
            if vpn_id not in self._vpns:
                raise DirectoryError(f"CE {ce.name}: no VPN {vpn_id}")
        if ce.client is not None:
            holder = self._by_client.get(ce.client)
            if holder is not None and holder.name != ce.name:
                raise DirectoryError(f"CE {ce.name}: client {ce.client} already belongs to CE {holder.name}")
        if ce.secret_id is not None:
            holder = self._by_secret.get(ce.secret_id)
            if holder is not None and holder.name != ce.name:
                raise DirectoryError(
                    f"CE {ce.name}: secret ID {ce.secret_id} already belongs to CE {holder.name}"
                )
            if key is None and ce.secret_id not in self._secrets:
                raise DirectoryError(f"CE {ce.name}: no key for secret ID {ce.secret_id}")
        old = self._ces.get(ce.name)
        if old is not None:
            self._unindex(old)
        self._index(ce)
        writes: list[Write] = [CeWrite(ce)]
        if key is not None:
            if ce.secret_id is None:
                raise DirectoryError(f"CE {ce.name}: a key needs a secret ID")
            self._secrets[ce.secret_id] = key
            self._macs[ce.secret_id] = MacKey(key)
            writes.append(SecretWrite(ce.secret_id, key))
        if old is not None and old.secret_id is not None and old.secret_id != ce.secret_id:
            self._secrets.pop(old.secret_id, None)
            self._macs.pop(old.secret_id, None)
            writes.append(SecretDelete(old.secret_id))
        return writes

    def delete_ce(self, name: str) -> list[Write]:
        ce = self._ces.get(name)
        if ce is None:
            raise DirectoryError(f"no CE {name!r}")
        self._unindex(ce)
        writes: list[Write] = [CeDelete(name)]
        if ce.secret_id is not None and self._secrets.pop(ce.secret_id, None) is not None:
            self._macs.pop(ce.secret_id, None)
            writes.append(SecretDelete(ce.secret_id))
        return writes

    def get_ce(self, name: str) -> CeRecord | None:
        return self._ces.get(name)
