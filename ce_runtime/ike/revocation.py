"""Certificate revocation for certificate mode: CRL files watched and handed to charon.

charon checks a peer's certificate against the CRLs it holds (its ``revocation`` plugin) when
the peer authenticates, not afterwards: an IKE_SA that was established before a revocation
lives on, through rekeys, until it is re-authenticated. So when a CRL file changes, the new
CRL is loaded (``load-cert`` type ``x509crl``) and, if it revokes serial numbers the previous
one did not, every certificate-authenticated IKE_SA is terminated so that its re-establishment
checks the peer again; a CRL re-issued without new revocations (the usual daily update) costs
no tunnel anything. Which peer holds a revoked serial is not known here (peers' certificates
arrive in IKE_AUTH), hence all of them.

Sans-IO: :class:`CrlWatch` is given each file's current ``(mtime_ns, size)`` and contents and
says what to load and whether to re-authenticate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["CrlError", "CrlUpdate", "CrlWatch", "parse_crl", "read_files"]


class CrlError(ValueError):
    pass


def parse_crl(data: bytes, what: str) -> tuple[bytes, frozenset[int]]:
    """``data`` (DER or PEM) as DER, and the serial numbers it revokes."""
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise CrlError(f"{what}: not an X.509 CRL ({exc})") from None
    return crl.public_bytes(Encoding.DER), frozenset(r.serial_number for r in crl)


@dataclass(frozen=True, slots=True)
class CrlUpdate:
    """What a :meth:`CrlWatch.check` found: CRLs (DER) to load, and whether to re-authenticate."""

    load: tuple[bytes, ...] = ()
    reauthenticate: bool = False
    errors: tuple[str, ...] = ()


@dataclass(slots=True)
class CrlWatch:
    """The CRL files of the certificate-mode VPNs, as last loaded into the current charon."""

    paths: tuple[Path, ...]
    _seen: dict[Path, tuple[int, int]] = field(default_factory=dict)
    _revoked: dict[Path, frozenset[int]] = field(default_factory=dict)

    def reset(self) -> None:
        """A new charon holds none of them: everything is loaded again (revocations kept: its
        connections are authenticated afresh anyway)."""
        self._seen.clear()

    def check(self, read: dict[Path, tuple[tuple[int, int], bytes] | OSError]) -> CrlUpdate:
        """``read``: per path, its ``((mtime_ns, size), contents)`` or the error reading it. A file
        that cannot be read or parsed keeps the CRL loaded before (reported, retried next time)."""
        load: list[bytes] = []
        errors: list[str] = []
        grew = False
        for path in self.paths:
            got = read.get(path)
            if isinstance(got, OSError) or got is None:
                errors.append(f"crl_file {path}: {getattr(got, 'strerror', None) or 'not read'}")
                continue
            stamp, data = got
            if self._seen.get(path) == stamp:
                continue
            try:
                der, revoked = parse_crl(data, f"crl_file {path}")
            except CrlError as exc:
                errors.append(str(exc))
                continue
            before = self._revoked.get(path)
            grew = grew or (before is not None and not revoked <= before)
            self._seen[path], self._revoked[path] = stamp, revoked
            load.append(der)
        return CrlUpdate(tuple(load), grew, tuple(errors))


def read_files(paths: tuple[Path, ...]) -> dict[Path, tuple[tuple[int, int], bytes] | OSError]:
    """The adapter's half: stat and read each file (the contents only if it changed is not worth
    the race; CRLs are small)."""
    out: dict[Path, tuple[tuple[int, int], bytes] | OSError] = {}
    for path in paths:
        try:
            st = path.stat()
            out[path] = ((st.st_mtime_ns, st.st_size), path.read_bytes())
        except OSError as exc:
            out[path] = exc
    return out
