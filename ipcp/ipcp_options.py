"""The IPCP option registry: RFC 1332, RFC 1877 and VPN-IP-Addresses under its configurable type."""

from __future__ import annotations

from typing import Final

from ipcp.option import OptionRegistry
from ipcp.rfc1332 import IpcpOptionType, decode_ip_address, decode_ip_addresses, decode_ip_compression
from ipcp.rfc1877 import decode_name_server
from ipcp.vpn_option import DEFAULT_VPN_OPTION_TYPE, register_vpn_option

__all__ = ["IPCP_OPTIONS", "ipcp_registry"]


def ipcp_registry(vpn_option_type: int | None = DEFAULT_VPN_OPTION_TYPE) -> OptionRegistry:
    """A fresh IPCP registry; ``vpn_option_type=None`` leaves VPN-IP-Addresses unknown (kept raw)."""
    registry = OptionRegistry(
        "IPCP",
        {
            IpcpOptionType.IP_ADDRESSES: decode_ip_addresses,
            IpcpOptionType.IP_COMPRESSION_PROTOCOL: decode_ip_compression,
            IpcpOptionType.IP_ADDRESS: decode_ip_address,
            IpcpOptionType.PRIMARY_DNS: decode_name_server,
            IpcpOptionType.PRIMARY_NBNS: decode_name_server,
            IpcpOptionType.SECONDARY_DNS: decode_name_server,
            IpcpOptionType.SECONDARY_NBNS: decode_name_server,
        },
    )
    if vpn_option_type is not None:
        register_vpn_option(registry, vpn_option_type)
    return registry


IPCP_OPTIONS: Final = ipcp_registry()
