"""Every option spec in the default registry: round trip, validation, and totality.

For each spec, values drawn from :func:`options.strategies.option_values` encode to a
payload that ``validate`` accepts and that decodes back to the same value and re-encodes
to the same bytes; and ``validate``/``decode`` of *any* bytes either succeed or raise
:class:`DecodeError` with an offset inside the payload, never another exception.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from options import DEFAULT_REGISTRY, DecodeError, OptionSpec
from options.strategies import option_values

SPECS: list[OptionSpec[Any]] = sorted(DEFAULT_REGISTRY, key=lambda s: s.code)


def budget(share: float) -> int:
    """A share of the profile's ``max_examples`` (100 unless HYPOTHESIS_PROFILE says otherwise)."""
    return max(5, int(settings().max_examples * share))


def spec_id(spec: OptionSpec[Any]) -> str:
    return f"{spec.code}-{spec.name}"


def test_the_registry_holds_every_spec_kind_the_brief_names() -> None:
    codes = {spec.code for spec in SPECS}
    # Address, list, pairs, ints with minimum, int lists, flags, text, bytes, enums,
    # client identifier, relay agent information, authentication, 145, Peer-CE, VPN servers.
    assert {1, 3, 21, 26, 55, 19, 12, 43, 53, 61, 82, 90, 145, 224, 225} <= codes


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_every_spec_has_a_value_strategy(spec: OptionSpec[Any]) -> None:
    option_values(spec)  # raises TypeError for a spec kind the strategies do not cover


def test_an_unknown_spec_kind_is_refused_by_the_dispatcher() -> None:
    class Odd(OptionSpec[int]):
        def validate(self, data: bytes) -> None: ...

        def decode(self, data: bytes) -> int:
            return 0

        def encode(self, value: int) -> bytes:
            return b""

    with pytest.raises(TypeError, match="no value strategy"):
        option_values(Odd(200, "odd"))


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
@settings(max_examples=budget(0.2), deadline=None)
@given(data=st.data())
def test_encode_decode_round_trip(spec: OptionSpec[Any], data: st.DataObject) -> None:
    value = data.draw(option_values(spec), label="value")
    payload = spec.encode(value)
    spec.validate(payload)  # raises if our own encoding is not accepted
    decoded = spec.decode(payload)
    assert decoded == value
    assert spec.encode(decoded) == payload
    spec.to_json(decoded)  # every value has a JSON rendering


def _near_misses(spec: OptionSpec[Any]) -> st.SearchStrategy[bytes]:
    """Valid payloads cut short, extended, or with one octet changed: the inputs that find off-by-ones."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        payload = spec.encode(draw(option_values(spec)))
        how = draw(st.sampled_from(("cut", "extend", "poke")))
        if how == "cut" or not payload:
            return payload[: draw(st.integers(0, max(0, len(payload) - 1)))]
        if how == "extend":
            return payload + draw(st.binary(min_size=1, max_size=8))
        at = draw(st.integers(0, len(payload) - 1))
        return payload[:at] + bytes((draw(st.integers(0, 255)),)) + payload[at + 1 :]

    return mutate()


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
@settings(max_examples=budget(0.25), deadline=None)
@given(data=st.data())
def test_decode_of_any_bytes_is_a_value_or_a_decode_error(spec: OptionSpec[Any], data: st.DataObject) -> None:
    payload = data.draw(st.one_of(st.binary(max_size=300), _near_misses(spec)), label="payload")
    try:
        spec.validate(payload)
    except DecodeError as exc:
        assert 0 <= exc.offset <= len(payload)
        with pytest.raises(DecodeError):
            spec.decode(payload)  # validate and decode agree on what is malformed
        return
    value = spec.decode(payload)  # cannot fail once validated (spec.py's contract)
    canonical = spec.encode(value)
    spec.validate(canonical)
    assert spec.decode(canonical) == value


def test_importing_the_strategies_without_hypothesis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.delitem(sys.modules, "options.strategies")
    with pytest.raises(ImportError, match=r"needs hypothesis.*fuzz"):
        importlib.import_module("options.strategies")
