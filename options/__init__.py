"""ce-autoconf's DHCP codec: messages, options and RFC 3118 authentication.

Pure functions and frozen values, no I/O: ``decode_message(bytes) -> DhcpMessage`` raises
only :class:`DecodeError`; ``encode_message(DhcpMessage) -> bytes``. Options are read
through typed specs, e.g. ``msg.options.get_value(rfc2132.SUBNET_MASK)``.
"""

from options import rfc2132, rfc3046, rfc3118, rfc6704, vpn
from options.errors import DecodeError, EncodeError
from options.message import (
    BOOTREPLY,
    BOOTREQUEST,
    DhcpMessage,
    Options,
    decode_message,
    encode_message,
    max_payload_for,
)
from options.registry import DEFAULT_REGISTRY, OptionRegistry
from options.rfc2132 import MessageType
from options.rfc3118 import Authentication, AuthProtocol
from options.spec import OptionSpec
from options.vpn import PEER_CE, VPN_SERVERS, PeerCeBlock

__all__ = [
    "BOOTREPLY",
    "BOOTREQUEST",
    "DEFAULT_REGISTRY",
    "PEER_CE",
    "VPN_SERVERS",
    "AuthProtocol",
    "Authentication",
    "DecodeError",
    "DhcpMessage",
    "EncodeError",
    "MessageType",
    "OptionRegistry",
    "OptionSpec",
    "Options",
    "PeerCeBlock",
    "decode_message",
    "encode_message",
    "max_payload_for",
    "rfc2132",
    "rfc3046",
    "rfc3118",
    "rfc6704",
    "vpn",
]
