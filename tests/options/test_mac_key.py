"""RFC 2104's precomputed HMAC-MD5 (``options.rfc3118.MacKey``) against the standard library."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from options.rfc3118 import MacKey


@given(key=st.binary(max_size=200), data=st.binary(max_size=1500))
def test_precomputed_hmac_md5_equals_the_standard_library(key: bytes, data: bytes) -> None:
    """Keys shorter than, equal to and longer than MD5's 64-octet block."""
    assert MacKey(key).digest(data) == hmac.digest(key, data, "md5")


def test_repr_hides_the_key() -> None:
    assert repr(MacKey(b"secret key material")) == "MacKey(<hidden>)"
