"""ce_runtime.ike.revocation: CRL files parsed, watched, and when a re-authentication is due."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ce_runtime.ike.revocation import CrlError, CrlWatch, parse_crl, read_files

CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])


def make_crl(serials: set[int], number: int = 1, pem: bool = False) -> bytes:
    """A CRL of the test CA revoking ``serials``."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(CA_NAME)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in sorted(serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(CA_KEY, hashes.SHA256())
    return crl.public_bytes(Encoding.PEM if pem else Encoding.DER)


def test_der_and_pem_give_the_der_and_the_revoked_serials() -> None:
    der = make_crl({7, 9})
    assert parse_crl(der, "x") == (der, frozenset({7, 9}))
    assert parse_crl(make_crl({7, 9}, pem=True), "x")[1] == frozenset({7, 9})
    with pytest.raises(CrlError, match=r"crl_file a\.crl: not an X\.509 CRL"):
        parse_crl(b"garbage", "crl_file a.crl")


def test_read_files_reports_a_missing_file_as_its_error(tmp_path: Path) -> None:
    there = tmp_path / "a.crl"
    there.write_bytes(b"x")
    got = read_files((there, tmp_path / "missing.crl"))
    found = got[there]
    assert not isinstance(found, OSError) and found[1] == b"x"
    assert isinstance(got[tmp_path / "missing.crl"], FileNotFoundError)


PATH = Path("/etc/ce/vpn.crl")
# Versions of the CRL file: the serials it revokes, or None for a read error / garbage.
versions = st.lists(
    st.one_of(st.none(), st.just("garbage"), st.sets(st.integers(1, 6), max_size=4)), max_size=8
)


@settings(max_examples=60, deadline=None)
@given(versions)
def test_watch_loads_changes_and_reauthenticates_only_when_revocations_grow(
    script: list[set[int] | str | None],
) -> None:
    watch = CrlWatch((PATH,))
    in_force: frozenset[int] | None = None  # what charon holds
    for n, version in enumerate(script, start=1):
        if version is None:
            update = watch.check({PATH: FileNotFoundError(2, "No such file or directory")})
            assert update.load == () and not update.reauthenticate and update.errors
            continue
        if isinstance(version, str):
            update = watch.check({PATH: ((n, 7), b"garbage")})
            assert update.load == () and not update.reauthenticate and update.errors
            continue
        data = make_crl(version, n)
        update = watch.check({PATH: ((n, len(data)), data)})
        assert [parse_crl(d, "")[1] for d in update.load] == [frozenset(version)]
        assert update.reauthenticate == (in_force is not None and not version <= in_force)
        in_force = frozenset(version)
        assert watch.check({PATH: ((n, len(data)), data)}).load == ()  # unchanged: nothing to do
    watch.reset()  # a new charon: loaded again, nobody re-authenticated
    if in_force is not None:
        data = make_crl(set(in_force), 99)
        again = watch.check({PATH: ((0, 0), data)})
        assert len(again.load) == 1 and not again.reauthenticate
