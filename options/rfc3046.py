"""RFC 3046 relay agent information (option 82) and its sub-options.

A server "MUST copy the Relay Agent Information option ... verbatim" into its reply
(RFC 3046 section 2.2), so the value keeps every sub-option byte for byte, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address

from options.errors import DecodeError
from options.registry import DEFAULT_REGISTRY
from options.spec import OptionSpec
from options.wire import Reader

__all__ = ["RELAY_AGENT_INFORMATION", "RelayAgentInformation", "RelaySubOption", "RelaySubOptionCode"]


class RelaySubOptionCode(IntEnum):
    """Sub-option codes from RFC 3046 and the RFCs that extend it."""

    CIRCUIT_ID = 1
    REMOTE_ID = 2
    DOCSIS_DEVICE_CLASS = 4  # RFC 3256
    LINK_SELECTION = 5  # RFC 3527
    SUBSCRIBER_ID = 6  # RFC 3993
    RADIUS_ATTRIBUTES = 7  # RFC 4014
    AUTHENTICATION = 8  # RFC 4030
    VENDOR_SPECIFIC = 9  # RFC 4243
    RELAY_AGENT_FLAGS = 10  # RFC 5010
    SERVER_IDENTIFIER_OVERRIDE = 11  # RFC 5107
    RELAY_ID = 12  # RFC 6925


#: RFC 3527 link selection and RFC 5107 server identifier override: exactly one address.
_ADDRESS_SUBOPTIONS = frozenset(
    {RelaySubOptionCode.LINK_SELECTION, RelaySubOptionCode.SERVER_IDENTIFIER_OVERRIDE}
)


@dataclass(frozen=True, slots=True)
class RelaySubOption:
    code: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 255:
            raise ValueError(f"sub-option code {self.code} is not an octet")
        if len(self.data) > 255:
            raise ValueError("a relay sub-option holds at most 255 octets")
        if self.code in _ADDRESS_SUBOPTIONS and len(self.data) != 4:
            raise ValueError(f"relay sub-option {self.code} is an IPv4 address (4 octets)")


@dataclass(frozen=True, slots=True)
class RelayAgentInformation:
    """The sub-options of option 82, in the order the relay sent them."""

    suboptions: tuple[RelaySubOption, ...]

    def __post_init__(self) -> None:
        if not self.suboptions:
            raise ValueError("RFC 3046 2.0: option 82 carries at least one sub-option")

    def get(self, code: int) -> bytes | None:
        for sub in self.suboptions:
            if sub.code == code:
                return sub.data
        return None

    @property
    def circuit_id(self) -> bytes | None:
        return self.get(RelaySubOptionCode.CIRCUIT_ID)

    @property
    def remote_id(self) -> bytes | None:
        return self.get(RelaySubOptionCode.REMOTE_ID)

    @property
    def link_selection(self) -> IPv4Address | None:
        """RFC 3527: the subnet to allocate from, when it is not giaddr's."""
        data = self.get(RelaySubOptionCode.LINK_SELECTION)
        return IPv4Address(data) if data is not None and len(data) == 4 else None

    @property
    def server_identifier_override(self) -> IPv4Address | None:
        """RFC 5107: the address the client must use as server identifier."""
        data = self.get(RelaySubOptionCode.SERVER_IDENTIFIER_OVERRIDE)
        return IPv4Address(data) if data is not None and len(data) == 4 else None


class RelayAgentInformationSpec(OptionSpec[RelayAgentInformation]):
    __slots__ = ()

    def validate(self, data: bytes) -> None:
        self.decode(data)

    def decode(self, data: bytes) -> RelayAgentInformation:
        reader = Reader(data)
        subs: list[RelaySubOption] = []
        while not reader.at_end():
            code = reader.pull_u8("sub-option code")
            length = reader.pull_u8("sub-option length")
            value = reader.pull_bytes(length, f"sub-option {code} value")
            if code in _ADDRESS_SUBOPTIONS and length != 4:
                raise DecodeError(
                    f"relay sub-option {code}: length {length} is not 4", reader.offset - length
                )
            subs.append(RelaySubOption(code, value))
        if not subs:
            raise DecodeError("relay_agent_information: no sub-options", 0)
        return RelayAgentInformation(tuple(subs))

    def encode(self, value: RelayAgentInformation) -> bytes:
        return b"".join(bytes((s.code, len(s.data))) + s.data for s in value.suboptions)


RELAY_AGENT_INFORMATION = DEFAULT_REGISTRY.register(RelayAgentInformationSpec(82, "relay_agent_information"))
