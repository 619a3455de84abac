"""Every store backend against the reference semantics of Snapshot.apply (SQLite, PostgreSQL).

One hypothesis property, parametrized by backend: random batches of writes over few keys
(so they collide, overwrite and delete each other), a restart somewhere in the sequence,
and after every commit ``load()`` must equal what :class:`MemoryStore` holds. Each example
gets an empty store: a new file, or a new database in the session's PostgreSQL cluster
(the ``postgres`` fixture of conftest.py, from pg_cluster.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_cluster import Cluster
from test_sqlite_store import lease

from dhcp_server.actions import (
    CeDelete,
    CeilingWrite,
    CeWrite,
    LeaseWrite,
    ReplayWrite,
    SecretDelete,
    SecretWrite,
    VpnDelete,
    VpnWrite,
    Write,
)
from dhcp_server.model import AuthPolicy, CeRecord, ClientKey, Lease, LeaseState, VpnRecord
from dhcp_server.postgres_store import PostgresStore
from dhcp_server.sqlite_store import SqliteStore
from dhcp_server.store import MemoryStore, Snapshot, Store, StoreError
from options.strategies import text_values

# -- strategies: few distinct keys, so writes collide, overwrite and delete each other ----------

addresses = st.one_of(st.integers(0xC0000200, 0xC0000207), st.sampled_from([0, 0xFFFFFFFF, 0x0A000001])).map(
    IPv4Address
)
clients = st.one_of(
    st.sampled_from([ClientKey.from_hardware(1, bytes(6)), ClientKey.from_client_id(b"\x01ce-1")]),
    st.binary(max_size=20).map(ClientKey.from_client_id),
)
u64 = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]))
times = st.floats(allow_nan=False, allow_infinity=True)
vpn_ids = st.sampled_from([0, 1, 7, 0xFFFFFFFF])
ce_names = st.sampled_from(["ce-a", "ce-b", "ce-c", "é"])
secret_ids = st.sampled_from([0, 0x1234, 0xFFFFFFFF])

leases = st.builds(
    Lease,
    address=addresses,
    client=clients,
    chaddr=st.binary(max_size=16),
    expires=times,
    state=st.sampled_from(LeaseState),
    xid=st.integers(0, 0xFFFFFFFF),
    hostname=st.none() | text_values(),
    nonce=st.none() | st.binary(min_size=16, max_size=16),
    updated=times,
)


def batches(nul_in_text: bool) -> st.SearchStrategy[list[list[Write]]]:
    """Write batches; PostgreSQL ``text`` cannot hold U+0000 (test_postgres_store.py checks it is
    refused whole), and the API accepts printable names only, so only SQLite is given it."""
    characters = st.characters(exclude_categories=["Cs"], exclude_characters="" if nul_in_text else "\x00")
    names = st.text(characters, max_size=12)
    vpns = st.builds(
        VpnRecord,
        vpn_id=vpn_ids,
        name=names,
        vpn_servers=st.lists(addresses, max_size=4).map(tuple),
        auth=st.sampled_from(AuthPolicy),
    )
    ces = st.builds(
        CeRecord,
        name=ce_names,
        client=st.none() | clients,
        secret_id=st.none() | secret_ids,
        vpns=st.frozensets(vpn_ids, max_size=3),
        static_address=st.none() | addresses,
    )
    writes: st.SearchStrategy[Write] = st.one_of(
        st.builds(LeaseWrite, leases),
        st.builds(ReplayWrite, clients, u64),
        st.builds(CeilingWrite, u64),
        st.builds(VpnWrite, vpns),
        st.builds(VpnDelete, vpn_ids),
        st.builds(CeWrite, ces),
        st.builds(CeDelete, ce_names),
        st.builds(SecretWrite, secret_ids, st.binary(max_size=64)),
        st.builds(SecretDelete, secret_ids),
    )
    return st.lists(st.lists(writes, max_size=12), max_size=6)


# -- backends ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """``fresh()`` yields an opener of one new, empty store (called again to reopen it)."""

    fresh: Callable[[], AbstractContextManager[Callable[[], Store]]]
    batches: st.SearchStrategy[list[list[Write]]]


@contextmanager
def _sqlite_store() -> Iterator[Callable[[], Store]]:
    with tempfile.TemporaryDirectory() as tmp:
        yield lambda: SqliteStore(Path(tmp) / "store.sqlite")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend(_sqlite_store, batches(nul_in_text=True))
    cluster: Cluster = request.getfixturevalue("postgres")

    @contextmanager
    def postgres_store() -> Iterator[Callable[[], Store]]:
        dsn = cluster.dsn(cluster.create_database())
        yield lambda: PostgresStore(dsn)

    return Backend(postgres_store, batches(nul_in_text=False))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), split=st.integers(0, 6))
def test_equals_memory_store_including_after_reopen(
    backend: Backend, data: st.DataObject, split: int
) -> None:
    """Any write sequence, batched any way, loads back as Snapshot.apply says, across a restart."""
    sequence = data.draw(backend.batches, label="batches")
    reference = MemoryStore()
    with backend.fresh() as open_store:
        store = open_store()
        try:
            for i, batch in enumerate(sequence):
                if i == split:  # a restart in the middle of the sequence
                    store.close()
                    store = open_store()
                store.commit(batch)
                reference.commit(batch)
                assert store.load() == reference.load()
        finally:
            store.close()
        store = open_store()
        try:
            assert store.load() == reference.load()
            if isinstance(store, SqliteStore):
                assert store.integrity_check() == ["ok"]
        finally:
            store.close()


def test_a_failed_commit_keeps_nothing_and_the_store_stays_usable(backend: Backend) -> None:
    with backend.fresh() as open_store:
        store = open_store()
        try:
            assert store.load() == Snapshot()
            store.commit([LeaseWrite(lease("10.0.0.1"))])
            before = store.load()
            # The bad lease comes after good writes of several kinds: the whole batch must go.
            bad: list[Write] = [
                LeaseWrite(lease("10.0.0.2")),
                SecretWrite(1, b"k" * 16),
                CeWrite(CeRecord("ce-1", None, None, frozenset({7}))),
                LeaseWrite(lease("10.0.0.3", xid=1 << 64)),
            ]
            with pytest.raises(StoreError, match="nothing written"):
                store.commit(bad)
            assert store.load() == before
            with pytest.raises(StoreError, match="64-bit"):
                store.commit([LeaseWrite(lease("10.0.0.4")), ReplayWrite(ClientKey(b"x"), -1)])
            assert store.load() == before
            store.commit([LeaseWrite(lease("10.0.0.5"))])
            assert set(store.load().leases) == {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.5")}
        finally:
            store.close()


def test_replay_state_keeps_the_maximum_across_commits(backend: Backend) -> None:
    client = ClientKey.from_client_id(b"ce")
    with backend.fresh() as open_store:
        store = open_store()
        try:
            store.commit([ReplayWrite(client, (1 << 64) - 1), CeilingWrite(1 << 63)])
            store.commit([ReplayWrite(client, 5), CeilingWrite(3)])
            snap = store.load()
            assert snap.replay == {client: (1 << 64) - 1}
            assert snap.ceiling == 1 << 63
        finally:
            store.close()
