"""Configuration and secrets files: every error at its file, line and field; keys never echoed."""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
import tomllib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhcp_server.config import (
    ConfigError,
    FieldPath,
    format_path,
    load_config,
    locate_fields,
    parse_config,
)
from dhcp_server.model import AuthPolicy, ClientKey, PoolRange
from dhcp_server.secrets import REDACTED, SecretsError, load_secrets, redact

REPO = Path(__file__).resolve().parents[2]
WriteFile = Callable[..., Path]

MINIMAL = """\
[server]
server_id = "192.0.2.1"

[[subnets]]
network = "10.0.0.0/24"
interface = "eth0"
pools = ["10.0.0.10-10.0.0.20"]

[store]
path = "store.sqlite"
"""


def problems(text: str, file: str = "server.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file)
    return [str(p) for p in info.value.problems]


# -- the example ------------------------------------------------------------------------------------


def test_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("examples/server.toml")
    server = config.server
    assert server.server_id == IPv4Address("192.0.2.1")
    direct, relayed = server.subnets
    assert direct.interface == "eth1"
    assert relayed.interface is None
    assert relayed.network == IPv4Network("203.0.113.0/25")
    assert len(direct.pools) == 2
    assert (direct.t1, direct.t2, direct.lease_time) == (1800, 3150, 3600)
    assert {r.client for r in direct.reservations} == {
        ClientKey.from_hardware(1, bytes.fromhex("020000770032")),
        ClientKey.from_client_id(bytes.fromhex("01020000770033")),
    }
    assert direct.auth is relayed.auth is AuthPolicy.REQUIRED
    assert server.quarantine.max_messages == 30
    assert (server.forcerenew_first_retry, server.forcerenew_max_attempts, server.forcerenew_holddown) == (
        4.0,
        5,
        1.0,
    )
    assert (server.peer_ce_code, server.vpn_server_code) == (224, 225)
    assert config.store.path == Path("/var/lib/ce-autoconf/store.sqlite")
    assert config.listen.interfaces == ("eth1", "eth2")
    assert config.api is not None
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8067)
    assert config.secrets_file == Path("examples/secrets.toml")


def test_example_secrets_load_when_private(tmp_path: Path) -> None:
    copy = tmp_path / "secrets.toml"
    shutil.copy(REPO / "examples" / "secrets.toml", copy)
    copy.chmod(0o600)
    keys = load_secrets(copy)
    assert set(keys) == {0x1234, 0x1235}
    assert keys[0x1235] == bytes.fromhex("fedcba9876543210") * 2


def test_minimal_config_takes_model_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, "m.toml", base=tmp_path)
    assert config.store.path == tmp_path / "store.sqlite"  # relative to the file's directory
    assert config.listen.interfaces == ("eth0",)  # from the subnets
    assert config.listen.port == 67
    assert config.api is None
    assert config.secrets_file is None
    subnet = config.server.subnets[0]
    assert subnet.pools == (PoolRange(IPv4Address("10.0.0.10"), IPv4Address("10.0.0.20")),)
    assert subnet.auth is AuthPolicy.REQUIRED


# -- errors name file, line and field ---------------------------------------------------------------


def test_bad_pool_address_is_reported_at_its_line() -> None:
    text = textwrap.dedent(
        """\
        # comment
        [server]
        server_id = "192.0.2.1"

        [store]
        path = "s.sqlite"

        [[subnets]]
        network = "10.0.1.0/24"
        interface = "eth0"
        pools = [
            "10.0.1.10-10.0.1.20",  # the first pool
            # the second pool, on line 14
            "10.0.1.30-10.0.1.300",
        ]
        """
    )
    assert problems(text, "examples/server.toml") == [
        "examples/server.toml:14: subnets[0].pools[1]: 10.0.1.300 is not an IPv4 address"
    ]


def test_all_problems_are_reported_at_once() -> None:
    text = MINIMAL.replace('server_id = "192.0.2.1"', 'server_id = "192.0.2.1"\nofer_hold = 5').replace(
        'interface = "eth0"', 'interface = "eth0"\nlease_time = true\nauth = "maybe"'
    )
    assert problems(text) == [
        "server.toml:3: server.ofer_hold: unknown key (did you mean offer_hold?)",
        "server.toml:8: subnets[0].lease_time: expected an integer, got a boolean",
        "server.toml:9: subnets[0].auth: 'maybe' is not one of required, optional, off",
    ]


def test_syntax_error_is_file_and_line() -> None:
    text = MINIMAL.replace('pools = ["10.0.0.10-10.0.0.20"]', "pools = [10.0.0.10-10.0.0.20]")
    (message,) = problems(text)
    assert message.startswith("server.toml:7: TOML syntax error: ")
    assert "column" in message


def test_unknown_tables_and_keys_are_errors() -> None:
    text = (
        MINIMAL + '\n[listne]\ninterfaces = ["eth0"]\n\n[[subnets]]\nnetwork = "10.1.0.0/24"\nrouter = []\n'
    )
    assert problems(text) == [
        "server.toml:17: subnets[1].router: unknown key (did you mean routers?)",
        "server.toml:12: listne: unknown key (did you mean listen?)",
    ]


SUBNET_HEAD = (
    '[store]\npath = "s"\n[listen]\ninterfaces = ["eth0"]\n[server]\nserver_id = "192.0.2.1"\n[[subnets]]\n'
)


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [
        (
            'network = "10.0.0.0/24"\npools = ["10.0.1.10-10.0.1.20"]',
            "9: subnets[0].pools[0]: pool 10.0.1.10-10.0.1.20 is outside 10.0.0.0/24",
        ),
        (
            'network = "10.0.0.0/24"\npools = ["10.0.0.20-10.0.0.10"]',
            "9: subnets[0].pools[0]: pool range 10.0.0.20-10.0.0.10 is empty",
        ),
        (
            'network = "10.0.0.0/24"\nlease_time = 600\nrenewal_time = 700',
            "10: subnets[0].renewal_time: need 0 < T1 (700) < T2 (525) < lease time (600)",
        ),
        (
            'network = "10.0.0.0/24"\nrenewal_time = 300\nrebinding_time = 200',
            "10: subnets[0].rebinding_time: need 0 < T1 (300) < T2 (200) < lease time (3600)",
        ),
        (
            'network = "10.0.0.0/24"\nlease_time = 1',
            "9: subnets[0].lease_time: need 0 < T1 (0) < T2 (0) < lease time (1)",
        ),
        (
            'network = "10.0.0.1/24"',
            "8: subnets[0].network: 10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)",
        ),
        (
            'network = "10.0.0.0/24"\npools = ["10.0.0.0-10.0.0.9"]',
            "9: subnets[0].pools[0]: pool 10.0.0.0-10.0.0.9 holds 10.0.0.0/24's network or broadcast address",
        ),
        (
            'network = "10.0.0.0/24"\npools = ["10.0.0.10-10.0.0.20",\n  "10.0.0.15-10.0.0.30"]',
            "10: subnets[0].pools[1]: overlaps pools[0] (10.0.0.10-10.0.0.20)",
        ),
        (
            'network = "10.0.0.0/24"\nrouters = ["10.9.0.1"]',
            "9: subnets[0].routers[0]: 10.9.0.1 is not in 10.0.0.0/24",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets.reservations]]\nhw = "02:00:00:00:00:01"\n'
            'address = "10.1.0.5"',
            "11: subnets[0].reservations[0].address: reservation 10.1.0.5 is outside 10.0.0.0/24",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets.reservations]]\naddress = "10.0.0.5"',
            "9: subnets[0].reservations[0]: needs exactly one of hw or client_id",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets.reservations]]\nclient_id = "01"\naddress = "10.0.0.5"\n'
            '[[subnets.reservations]]\nclient_id = "01"\naddress = "10.0.0.6"',
            "13: subnets[0].reservations[1].client_id: already has reservations[0]",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets.reservations]]\nhw = "02:00:00:00:01"\naddress = "10.0.0.5"',
            "10: subnets[0].reservations[0].hw: an Ethernet address (htype 1) is 6 octets, not 5",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets.reservations]]\nhw = "02:00:00:00:01"\nhtype = 6\n'
            'address = "10.0.0.5"\n[[subnets.reservations]]\nhw = "zz"\naddress = "10.0.0.6"',
            '14: subnets[0].reservations[1].hw: zz is not a hardware address such as "02:00:00:77:00:32"',
        ),
        (
            'network = "10.0.0.0/24"\ninterface = "eth7"',
            "9: subnets[0].interface: eth7 is not in listen.interfaces",
        ),
        (
            'network = "10.0.0.0/24"\n[[subnets]]\nnetwork = "10.0.0.128/25"',
            "10: subnets[1].network: 10.0.0.128/25 overlaps subnets[0] (10.0.0.0/24)",
        ),
    ],
)
def test_model_rules_are_reported_at_the_field(subnet: str, expected: str) -> None:
    """Rules of the model (and ours on top) land on the line and field that broke them."""
    assert problems(SUBNET_HEAD + subnet + "\n", "t.toml") == ["t.toml:" + expected]


SUBNETS = '[[subnets]]\nnetwork = "10.0.0.0/24"\ninterface = "eth0"\n'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('server_id = "0.0.0.0"', "server.server_id: 0.0.0.0 is not a unicast address"),
        (
            "server_id = 17",
            'server.server_id: expected an IPv4 address as a string such as "192.0.2.1", got an integer',
        ),
        ('server_id = "192.0.2.1"\noffer_hold = -1', "server.offer_hold: must be greater than 0, got -1"),
        (
            'server_id = "192.0.2.1"\n[vpn_options]\npeer_ce = 200',
            "vpn_options.peer_ce: must be between 224 and 254, got 200",
        ),
        (
            'server_id = "192.0.2.1"\n[vpn_options]\npeer_ce = 230\nvpn_server = 230',
            "vpn_options.vpn_server: option code 230 is already peer_ce's",
        ),
        (
            'server_id = "192.0.2.1"\n[quarantine]\nwindow = 0',
            "quarantine.window: must be greater than 0, got 0",
        ),
        (
            'server_id = "192.0.2.1"\n[forcerenew]\nmax_attempts = 0',
            "forcerenew.max_attempts: must be between 1 and 100, got 0",
        ),
        (
            'server_id = "192.0.2.1"\n[forcerenew]\nholddown = -1',
            "forcerenew.holddown: must be at least 0, got -1",
        ),
        (
            'server_id = "192.0.2.1"\n[api]\nlisten = "localhost:80"\ntoken_file = "t"',
            'api.listen: expected "address:port" such as "127.0.0.1:8067", got localhost:80',
        ),
        ('server_id = "192.0.2.1"\n[api]\nlisten = "[::1]:8067"', "api.token_file: is required"),
        (
            'server_id = "192.0.2.1"\n[api]\nlisten = "127.0.0.1:8067"\ntoken_file = "t"\n'
            'metrics_require_token = "yes"',
            "api.metrics_require_token: expected true or false, got a string",
        ),
        (
            'server_id = "192.0.2.1"\n[store]\nbackend = "postgres"',
            "store.backend: 'postgres' is not one of sqlite, postgresql",
        ),
    ],
)
def test_server_level_fields(line: str, expected: str) -> None:
    text = SUBNETS + "[server]\n" + line + "\n"
    if "[store]" in text:
        text += 'path = "s"\n'
    else:
        text += '[store]\npath = "s"\n'
    found = problems(text)
    assert len(found) == 1, found
    _, line_number, rest = found[0].split(":", 2)
    assert rest.strip() == expected
    # The line named is where the field is written, or its table's header when it is missing.
    field = expected.partition(":")[0]
    table, _, key = field.rpartition(".")
    written = text.splitlines()[int(line_number) - 1]
    assert written.startswith(key) or written == f"[{table}]"


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (
            'backend = "postgresql"\npath = "s"',
            [
                'server.toml:8: store.path: is for backend = "sqlite"; PostgreSQL is reached through dsn',
                "server.toml:6: store.dsn: is required",
            ],
        ),
        ('dsn = "dbname=dhcp"\npath = "s"', ['server.toml:7: store.dsn: is for backend = "postgresql"']),
        (
            'backend = "postgresql"\ndsn = "dbname=dhcp nonsense"',
            [
                "server.toml:8: store.dsn: is not a libpq connection string (key=value pairs such as "
                '"host=/run/postgresql dbname=dhcp user=dhcp", or a postgresql:// URI)'
            ],
        ),
        (
            'backend = "postgresql"\ndsn = "dbname=dhcp"\npassword_file = "/nonexistent/pw"',
            ["server.toml:9: store.password_file: cannot read /nonexistent/pw: No such file or directory"],
        ),
    ],
)
def test_store_backend_fields(store: str, expected: list[str]) -> None:
    """Each backend's keys, and only those; the PostgreSQL ones are checked at start."""
    text = SUBNETS + '[server]\nserver_id = "10.0.0.1"\n[store]\n' + store + "\n"
    assert problems(text) == expected


def test_a_postgresql_store_needs_no_path() -> None:
    text = (
        SUBNETS + '[server]\nserver_id = "10.0.0.1"\n[store]\nbackend = "postgresql"\ndsn = "dbname=dhcp"\n'
    )
    store = parse_config(text).store
    assert (store.backend, store.dsn, store.path, store.password_file) == (
        "postgresql",
        "dbname=dhcp",
        None,
        None,
    )
    assert store.describe() == "postgresql: dbname=dhcp"


def test_metrics_require_token_defaults_to_off(tmp_path: Path) -> None:
    api = '[api]\nlisten = "127.0.0.1:8067"\ntoken_file = "api.token"\n'
    config = parse_config(MINIMAL + api, "m.toml", base=tmp_path)
    assert config.api is not None
    assert config.api.token_file == tmp_path / "api.token"
    assert config.api.metrics_require_token is False
    config = parse_config(MINIMAL + api + "metrics_require_token = true\n", "m.toml", base=tmp_path)
    assert config.api is not None
    assert config.api.metrics_require_token is True


def test_missing_required_parts() -> None:
    assert problems("") == [
        "server.toml: server.server_id: is required",
        "server.toml: subnets: at least one [[subnets]] is required",
        "server.toml: store.path: is required",
    ]


def test_an_empty_subnet_list_is_refused() -> None:
    assert problems('subnets = []\n[server]\nserver_id = "192.0.2.1"\n[store]\npath = "s"\n') == [
        "server.toml:1: subnets: at least one [[subnets]] is required"
    ]


def test_wrong_table_types() -> None:
    text = MINIMAL + "listen = 5\n"
    assert problems(text) == ["server.toml:11: store.listen: unknown key"]
    text = "subnets = 5\n" + MINIMAL.replace("[[subnets]]", "[extra]")
    assert (
        problems(text)[0]
        == "server.toml:1: subnets: must be an array of tables ([[subnets]]), not an integer"
    )


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        load_config(tmp_path / "nope.toml")


# -- the field locator --------------------------------------------------------------------------------


def test_locator_handles_the_shapes_of_real_configs() -> None:
    text = textwrap.dedent(
        """        title = "a [fake] header and a fake = key"  # line 1
        notes = \"\"\"
        [not_a_table]
        fake = 1
        \"\"\"
        [server]
        "quoted key" = 1
        dotted.inner = 2
        inline = { a = 1, b = [1, 2] }

        [[subnets]]
        pools = [
          "a",

          # comment with a ] bracket
          "b", "c"
        ]
        [subnets.extra]
        x = 1
        [[subnets.reservations]]
        hw = 1
        [[subnets.reservations]]
        hw = 2
        [[subnets]]
        [[subnets.reservations]]
        hw = 3
        """
    )
    tomllib.loads(text)  # the text is valid TOML
    lines = locate_fields(text)
    expected: dict[FieldPath, int] = {
        ("title",): 1,
        ("notes",): 2,
        ("server",): 6,
        ("server", "quoted key"): 7,
        ("server", "dotted"): 8,
        ("server", "dotted", "inner"): 8,
        ("server", "inline", "a"): 9,
        ("server", "inline", "b", 1): 9,
        ("subnets", 0): 11,
        ("subnets", 0, "pools"): 12,
        ("subnets", 0, "pools", 0): 13,
        ("subnets", 0, "pools", 1): 16,
        ("subnets", 0, "pools", 2): 16,
        ("subnets", 0, "extra", "x"): 19,
        ("subnets", 0, "reservations", 0, "hw"): 21,
        ("subnets", 0, "reservations", 1): 22,
        ("subnets", 0, "reservations", 1, "hw"): 23,
        ("subnets", 1): 24,
        ("subnets", 1, "reservations", 0, "hw"): 26,
    }
    assert {k: lines.get(k) for k in expected} == expected
    assert ("not_a_table",) not in lines
    assert ("fake",) not in lines


def test_format_path() -> None:
    assert format_path(("subnets", 0, "pools", 1)) == "subnets[0].pools[1]"
    assert format_path(("a b", 2)) == '"a b"[2]'


# A generated document: tables, arrays of tables, inline arrays (one line or several), with
# strings that look like headers and keys. Every field must be found at the line it was written.

keys = st.from_regex(r"[a-z][a-z_]{0,4}", fullmatch=True) | st.sampled_from(["a b", "x.y", "key"])
tricky_text = st.text(st.sampled_from('ab =[]{}#",.\\é \t'), max_size=12)
scalars = (
    st.integers(-(2**63), 2**63 - 1)
    | tricky_text
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = scalars | st.lists(scalars, max_size=4)
tables = st.recursive(
    st.dictionaries(keys, values, max_size=4),
    lambda inner: st.dictionaries(keys, values | inner | st.lists(inner, min_size=1, max_size=3), max_size=4),
    max_leaves=25,
)


def _key(k: str) -> str:
    return k if k.replace("_", "").isalnum() and k.isascii() else json.dumps(k)


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def _emit(
    table: dict[str, object], path: FieldPath, out: list[str], where: dict[FieldPath, int], multiline: bool
) -> None:
    names = [p for p in path if isinstance(p, str)]

    def is_table(v: object) -> bool:
        return isinstance(v, dict)

    def is_tables(v: object) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(e, dict) for e in v)

    for k, v in table.items():
        if is_table(v) or is_tables(v):
            continue
        where[(*path, k)] = len(out) + 1
        if isinstance(v, list) and multiline:
            out.append(f"{_key(k)} = [  # {len(v)} items")
            for i, e in enumerate(v):
                out.append("# [a comment] x = 1")
                where[(*path, k, i)] = len(out) + 1
                out.append(f"  {_scalar(e)},")
            out.append("]")
        elif isinstance(v, list):
            out.append(f"{_key(k)} = [{', '.join(map(_scalar, v))}]")
            for i in range(len(v)):
                where[(*path, k, i)] = len(out)
        else:
            out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in table.items():
        header = ".".join(_key(n) for n in [*names, k])
        if is_table(v):
            assert isinstance(v, dict)
            out.append(f"[{header}]")
            where[(*path, k)] = len(out)
            _emit(v, (*path, k), out, where, multiline)
        elif is_tables(v):
            assert isinstance(v, list)
            for i, element in enumerate(v):
                out.append(f"[[{header}]]")
                where[(*path, k, i)] = len(out)
                _emit(element, (*path, k, i), out, where, multiline)


@settings(max_examples=150, deadline=None)
@given(document=tables, multiline=st.booleans())
def test_locator_finds_every_generated_field(document: dict[str, object], multiline: bool) -> None:
    out: list[str] = []
    where: dict[FieldPath, int] = {}
    _emit(document, (), out, where, multiline)
    text = "\n".join(out) + "\n"
    assert tomllib.loads(text) == document
    lines = locate_fields(text)
    assert {k: lines.get(k) for k in where} == where


# -- secrets ------------------------------------------------------------------------------------------

KEY_HEX = "7264632d7365637265742d6b65792d31"


def test_secrets_inline_and_from_file(write_file: WriteFile) -> None:
    write_file("ce2.key", "72:64:63:2d:73:65:63:72\n65:74:2d:6b:65:79:2d:32\n")
    path = write_file(
        "secrets.toml",
        f'[[key]]\nsecret_id = 0x1234\nkey = "{KEY_HEX}"\n\n[[key]]\nsecret_id = 2\nkey_file = "ce2.key"\n',
    )
    assert load_secrets(path) == {0x1234: b"rdc-secret-key-1", 2: b"rdc-secret-key-2"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secrets_readable_by_others_are_refused(write_file: WriteFile, mode: int) -> None:
    path = write_file("secrets.toml", f'[[key]]\nsecret_id = 1\nkey = "{KEY_HEX}"\n', mode=mode)
    with pytest.raises(SecretsError) as info:
        load_secrets(path)
    assert str(info.value) == (
        f"{path}: has mode {mode:04o}; secret files must be 0600 or stricter (chmod 600 {path})"
    )


def test_stricter_modes_are_accepted(write_file: WriteFile) -> None:
    path = write_file("secrets.toml", f'[[key]]\nsecret_id = 1\nkey = "{KEY_HEX}"\n', mode=0o400)
    assert load_secrets(path) == {1: b"rdc-secret-key-1"}


def test_key_file_must_be_private_too(write_file: WriteFile) -> None:
    key_file = write_file("k.key", KEY_HEX, mode=0o644)
    path = write_file("secrets.toml", '[[key]]\nsecret_id = 1\nkey_file = "k.key"\n')
    with pytest.raises(SecretsError) as info:
        load_secrets(path)
    assert str(info.value) == (
        f"{path}:3: key[0].key_file: {key_file} has mode 0644; secret files must be 0600 or stricter "
        f"(chmod 600 {key_file})"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_secrets_owned_by_someone_else_are_refused(write_file: WriteFile) -> None:
    path = write_file("secrets.toml", f'[[key]]\nsecret_id = 1\nkey = "{KEY_HEX}"\n')
    os.chown(path, 65534, -1)
    with pytest.raises(SecretsError, match=r"is owned by uid 65534, not by the server's user \(uid 0\)"):
        load_secrets(path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f'key = "{KEY_HEX[:-1]}Z"', "is not hexadecimal (32 characters after removing separators"),
        (f'key = "{KEY_HEX[:20]}"', "is 10 octets; keys are 16 to 1024 octets"),
        (f"key = 0x{KEY_HEX}", "expected the key in hexadecimal as a string, got an integer"),
        (f'key = "{KEY_HEX}"\nkey_file = "{KEY_HEX}"', "needs exactly one of key or key_file"),
    ],
)
def test_malformed_keys_are_located_but_never_echoed(write_file: WriteFile, line: str, expected: str) -> None:
    path = write_file("secrets.toml", f"# keys\n[[key]]\nsecret_id = 1\n{line}\n")
    with pytest.raises(SecretsError) as info:
        load_secrets(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert expected in message
    for fragment in (KEY_HEX[:8], KEY_HEX[-8:], KEY_HEX[10:18]):
        assert fragment not in message


def test_syntax_errors_in_secrets_do_not_quote_the_line(write_file: WriteFile) -> None:
    secret = "s3cr3t\x01" + KEY_HEX
    path = write_file("secrets.toml", f'[[key]]\nsecret_id = 1\nkey = "{secret}"\n')
    with pytest.raises(SecretsError) as info:
        load_secrets(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: TOML syntax error: Illegal character")
    assert "\\x01" not in message
    assert "s3cr3t" not in message
    assert KEY_HEX[:8] not in message


def test_duplicate_secret_ids_and_unknown_keys(write_file: WriteFile) -> None:
    path = write_file(
        "secrets.toml",
        f'[[key]]\nsecret_id = 7\nkey = "{KEY_HEX}"\n[[key]]\nsecret_id = 7\nkey = "{KEY_HEX}"\nkye = "x"\n',
    )
    with pytest.raises(SecretsError) as info:
        load_secrets(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:7: key[1].kye: unknown key (did you mean key?)",
        f"{path}:5: key[1].secret_id: secret ID 0x7 is already key[0]'s",
    ]


def test_missing_secrets_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match=r"missing\.toml: cannot read: No such file"):
        load_secrets(tmp_path / "missing.toml")


def test_redact_hides_key_material() -> None:
    event = {
        "event": "ce_added",
        "ce": "ce-1",
        "secret_id": 0x1234,
        "key": b"rdc-secret-key-1",
        "nested": {"Token": "abc", "values": [b"\x00\x01", "ok"]},
        "nonce": "00ff",
    }
    assert redact(event) == {
        "event": "ce_added",
        "ce": "ce-1",
        "secret_id": 0x1234,
        "key": REDACTED,
        "nested": {"Token": REDACTED, "values": ["<2 bytes>", "ok"]},
        "nonce": REDACTED,
    }


def test_secrets_file_mode_is_checked_on_what_was_opened(write_file: WriteFile) -> None:
    """The mode is read from the open descriptor, so a symlink is judged by its target."""
    target = write_file("real.toml", f'[[key]]\nsecret_id = 1\nkey = "{KEY_HEX}"\n', mode=0o644)
    link = target.with_name("link.toml")
    link.symlink_to(target)
    assert stat.S_IMODE(link.lstat().st_mode) == 0o777
    with pytest.raises(SecretsError, match="has mode 0644"):
        load_secrets(link)
