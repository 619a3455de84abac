"""The codec's two error types: the peer's fault versus the caller's.

Decoding hostile bytes raises :class:`DecodeError` and nothing else, so a daemon can
count and drop with one ``except``. :class:`EncodeError` is reserved for requests
that cannot be met on the wire (a message that does not fit the size the peer allows).
"""

from __future__ import annotations

__all__ = ["DecodeError", "EncodeError"]


class DecodeError(ValueError):
    """Bytes received from a peer are not a valid encoding.

    ``offset`` is the position in the outermost buffer being decoded where the
    problem was found, so an operator can find it in a hex dump.
    """

    __slots__ = ("offset", "reason")

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at offset {offset})")
        self.reason = reason
        self.offset = offset

    def shifted(self, base: int) -> DecodeError:
        """The same error with its offset moved by ``base``: for errors found in a sub-buffer."""
        return DecodeError(self.reason, self.offset + base)


class EncodeError(ValueError):
    """A value is valid but cannot be put on the wire under the constraints asked for."""
