"""RFC 2132 DHCP options and BOOTP vendor extensions, with RFC 2131's message types.

Each spec carries the RFC's length rules; the value types are plain immutable Python
values (``IPv4Address``, tuples, ``int``, ``str``, ``bool``, ``bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from options.errors import DecodeError
from options.registry import DEFAULT_REGISTRY
from options.spec import (
    AddressListSpec,
    AddressPairListSpec,
    AddressSpec,
    BytesSpec,
    EnumSpec,
    FlagSpec,
    IntListSpec,
    IntSpec,
    OptionSpec,
    StructuredSpec,
    TextSpec,
)

__all__ = [
    "ClientIdentifier",
    "MessageType",
    "Overload",
]


class MessageType(IntEnum):
    """Option 53. 1-8 from RFC 2131, 9 from RFC 3203, 10-18 from RFCs 4388, 6926 and 7724."""

    DHCPDISCOVER = 1
    DHCPOFFER = 2
    DHCPREQUEST = 3
    DHCPDECLINE = 4
    DHCPACK = 5
    DHCPNAK = 6
    DHCPRELEASE = 7
    DHCPINFORM = 8
    DHCPFORCERENEW = 9
    DHCPLEASEQUERY = 10
    DHCPLEASEUNASSIGNED = 11
    DHCPLEASEUNKNOWN = 12
    DHCPLEASEACTIVE = 13
    DHCPBULKLEASEQUERY = 14
    DHCPLEASEQUERYDONE = 15
    DHCPACTIVELEASEQUERY = 16
    DHCPLEASEQUERYSTATUS = 17
    DHCPTLS = 18


class Overload(IntEnum):
    """Option 52: which BOOTP fields hold options (RFC 2132 section 9.3)."""

    FILE = 1
    SNAME = 2
    BOTH = 3


@dataclass(frozen=True, slots=True)
class ClientIdentifier:
    """Option 61: a type octet (1 = Ethernet, 255 = RFC 4361 IAID/DUID) and the identifier."""

    type: int
    identifier: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 255:
            raise ValueError(f"client identifier type {self.type} is not an octet")
        if not self.identifier:
            raise ValueError("RFC 2132 9.14: the client identifier has at least one octet after the type")


def _decode_client_id(data: bytes) -> ClientIdentifier:
    if len(data) < 2:
        raise DecodeError(f"client_identifier: length {len(data)} is below the minimum 2", 0)
    return ClientIdentifier(data[0], bytes(data[1:]))


def _encode_client_id(value: ClientIdentifier) -> bytes:
    return bytes((value.type,)) + value.identifier


def _a(code: int, name: str) -> AddressSpec:
    return AddressSpec(code, name)


def _l(code: int, name: str, min_count: int = 1) -> AddressListSpec:
    return AddressListSpec(code, name, min_count)


def _t(code: int, name: str) -> TextSpec:
    return TextSpec(code, name)


def _f(code: int, name: str) -> FlagSpec:
    return FlagSpec(code, name)


SUBNET_MASK = _a(1, "subnet_mask")
TIME_OFFSET = IntSpec(2, "time_offset", 4, signed=True)
ROUTER = _l(3, "router")
TIME_SERVER = _l(4, "time_server")
NAME_SERVER = _l(5, "name_server")
DOMAIN_NAME_SERVER = _l(6, "domain_name_server")
LOG_SERVER = _l(7, "log_server")
COOKIE_SERVER = _l(8, "cookie_server")
LPR_SERVER = _l(9, "lpr_server")
IMPRESS_SERVER = _l(10, "impress_server")
RESOURCE_LOCATION_SERVER = _l(11, "resource_location_server")
HOST_NAME = _t(12, "host_name")
BOOT_FILE_SIZE = IntSpec(13, "boot_file_size", 2)
MERIT_DUMP_FILE = _t(14, "merit_dump_file")
DOMAIN_NAME = _t(15, "domain_name")
SWAP_SERVER = _a(16, "swap_server")
ROOT_PATH = _t(17, "root_path")
EXTENSIONS_PATH = _t(18, "extensions_path")
IP_FORWARDING = _f(19, "ip_forwarding")
NON_LOCAL_SOURCE_ROUTING = _f(20, "non_local_source_routing")
POLICY_FILTER = AddressPairListSpec(21, "policy_filter")
MAX_DATAGRAM_REASSEMBLY = IntSpec(22, "max_datagram_reassembly", 2, minimum=576)
DEFAULT_IP_TTL = IntSpec(23, "default_ip_ttl", 1, minimum=1)
PATH_MTU_AGING_TIMEOUT = IntSpec(24, "path_mtu_aging_timeout", 4)
PATH_MTU_PLATEAU_TABLE = IntListSpec(25, "path_mtu_plateau_table", 2)
INTERFACE_MTU = IntSpec(26, "interface_mtu", 2, minimum=68)
ALL_SUBNETS_LOCAL = _f(27, "all_subnets_local")
BROADCAST_ADDRESS = _a(28, "broadcast_address")
PERFORM_MASK_DISCOVERY = _f(29, "perform_mask_discovery")
MASK_SUPPLIER = _f(30, "mask_supplier")
PERFORM_ROUTER_DISCOVERY = _f(31, "perform_router_discovery")
ROUTER_SOLICITATION_ADDRESS = _a(32, "router_solicitation_address")
STATIC_ROUTE = AddressPairListSpec(33, "static_route")
TRAILER_ENCAPSULATION = _f(34, "trailer_encapsulation")
ARP_CACHE_TIMEOUT = IntSpec(35, "arp_cache_timeout", 4)
ETHERNET_ENCAPSULATION = _f(36, "ethernet_encapsulation")
TCP_DEFAULT_TTL = IntSpec(37, "tcp_default_ttl", 1, minimum=1)
TCP_KEEPALIVE_INTERVAL = IntSpec(38, "tcp_keepalive_interval", 4)
TCP_KEEPALIVE_GARBAGE = _f(39, "tcp_keepalive_garbage")
NIS_DOMAIN = _t(40, "nis_domain")
NIS_SERVERS = _l(41, "nis_servers")
NTP_SERVERS = _l(42, "ntp_servers")
VENDOR_SPECIFIC = BytesSpec(43, "vendor_specific")
NETBIOS_NAME_SERVERS = _l(44, "netbios_name_servers")
NETBIOS_DD_SERVERS = _l(45, "netbios_dd_servers")
NETBIOS_NODE_TYPE = IntSpec(46, "netbios_node_type", 1)
NETBIOS_SCOPE = _t(47, "netbios_scope")
X_FONT_SERVERS = _l(48, "x_font_servers")
X_DISPLAY_MANAGERS = _l(49, "x_display_managers")
REQUESTED_IP_ADDRESS = _a(50, "requested_ip_address")
IP_ADDRESS_LEASE_TIME = IntSpec(51, "ip_address_lease_time", 4)
OPTION_OVERLOAD = EnumSpec(52, "option_overload", Overload)
MESSAGE_TYPE = EnumSpec(53, "message_type", MessageType)
SERVER_IDENTIFIER = _a(54, "server_identifier")
PARAMETER_REQUEST_LIST = IntListSpec(55, "parameter_request_list", 1)
MESSAGE = _t(56, "message")
MAXIMUM_MESSAGE_SIZE = IntSpec(57, "maximum_message_size", 2, minimum=576)
RENEWAL_TIME = IntSpec(58, "renewal_time", 4)
REBINDING_TIME = IntSpec(59, "rebinding_time", 4)
VENDOR_CLASS_IDENTIFIER = BytesSpec(60, "vendor_class_identifier")
CLIENT_IDENTIFIER: OptionSpec[ClientIdentifier] = StructuredSpec(
    61, "client_identifier", _decode_client_id, _encode_client_id
)
NISPLUS_DOMAIN = _t(64, "nisplus_domain")
NISPLUS_SERVERS = _l(65, "nisplus_servers")
TFTP_SERVER_NAME = _t(66, "tftp_server_name")
BOOTFILE_NAME = _t(67, "bootfile_name")
MOBILE_IP_HOME_AGENT = _l(68, "mobile_ip_home_agent", min_count=0)
SMTP_SERVERS = _l(69, "smtp_servers")
POP3_SERVERS = _l(70, "pop3_servers")
NNTP_SERVERS = _l(71, "nntp_servers")
WWW_SERVERS = _l(72, "www_servers")
FINGER_SERVERS = _l(73, "finger_servers")
IRC_SERVERS = _l(74, "irc_servers")
STREETTALK_SERVERS = _l(75, "streettalk_servers")
STDA_SERVERS = _l(76, "stda_servers")

ALL: tuple[OptionSpec[Any], ...] = tuple(v for v in globals().values() if isinstance(v, OptionSpec))
__all__ += [spec.name.upper() for spec in ALL]
__all__ += ["ALL"]

for _spec in ALL:
    DEFAULT_REGISTRY.register(_spec)
