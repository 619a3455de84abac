"""Which spec decodes which option code.

The decoder validates every option its registry knows and keeps the rest byte-exact.
A registry is an ordinary object: tests and users build their own (for example to move
the draft's VPN options to other site-specific codes) without touching the default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from options.spec import OptionSpec

__all__ = ["DEFAULT_REGISTRY", "OptionRegistry"]

S = TypeVar("S", bound=OptionSpec[Any])


class OptionRegistry:
    """A mapping from option code to :class:`OptionSpec`, one spec per code."""

    __slots__ = ("_by_code", "_by_name", "_rules")

    def __init__(self, specs: tuple[OptionSpec[Any], ...] = ()) -> None:
        self._by_code: dict[int, OptionSpec[Any]] = {}
        self._by_name: dict[str, OptionSpec[Any]] = {}
        self._rules: dict[int, Callable[[bytes], None] | tuple[int, int, int]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: S, *, replace: bool = False) -> S:
        """Add ``spec``; a second spec for a taken code is refused unless ``replace``."""
        old = self._by_code.get(spec.code)
        if old is not None and not replace:
            raise ValueError(f"option code {spec.code} is already {old.name!r}")
        if old is not None:
            del self._by_name[old.name]
        self._by_code[spec.code] = spec
        self._by_name[spec.name] = spec
        self._rules[spec.code] = spec.length_rule or spec.validate
        return spec

    def unregister(self, code: int) -> None:
        spec = self._by_code.pop(code)
        del self._by_name[spec.name]
        del self._rules[code]

    def __getitem__(self, code: int) -> OptionSpec[Any]:
        return self._by_code[code]

    def get(self, code: int) -> OptionSpec[Any] | None:
        return self._by_code.get(code)

    def by_name(self, name: str) -> OptionSpec[Any] | None:
        return self._by_name.get(name)

    def copy(self) -> OptionRegistry:
        return OptionRegistry(tuple(self._by_code.values()))

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[OptionSpec[Any]]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def rules(self) -> Mapping[int, Callable[[bytes], None] | tuple[int, int, int]]:
        """Code to its length rule, or to ``validate`` where length is not enough.

        What the decoder's hot loop looks up: see :attr:`OptionSpec.length_rule`.
        """
        return self._rules


#: The registry ``decode_message`` uses unless told otherwise; the RFC modules fill it.
DEFAULT_REGISTRY = OptionRegistry()
