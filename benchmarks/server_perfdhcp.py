"""perfdhcp 4-way exchanges per second: our server (SQLite; auth off and "optional") and Kea
(kea-dhcp4, memfile, one thread), one after the other in the same namespace set-up.

Usage (root; perfdhcp from Debian's kea-admin, kea-dhcp4 from kea-dhcp4-server):

    .venv/bin/python benchmarks/server_perfdhcp.py [--seconds 10] [--rates 1000,2000,...]

Set-up (../shared/notes/benchmarks.md): namespaces "srv" (10.77.0.1/16) and "gen"
(10.77.0.2/16) on a veth pair with static neighbour entries; a 65k-address pool; every
server starts from an empty lease store; the server is pinned to CPU 1 and perfdhcp
(``-g single``, a relay: giaddr set, replies to giaddr:67) to CPU 0. For each server the
offered rate steps up through ``--rates`` (all contenders back to back at each rate, so
load from elsewhere hits them alike) until drops reach 1% twice in a row; the figure is
the highest achieved exchange rate with drops under 1% (perfdhcp's "Rate:" line), and the
peak achieved rate at any drop ratio is printed too (capacity under overload). perfdhcp cannot
authenticate, so auth "optional" measures the policy check path, not HMACs.

``--store postgresql``: the same perfdhcp runs with four contenders, ours on SQLite against
Kea memfile and ours on the PostgreSQL store against Kea's PostgreSQL lease backend (schema
from kea-admin's dhcpdb_create.pgsql), both on one throwaway PostgreSQL 15 cluster
(tests/server/pg_cluster.py: unix socket, fsync and synchronous_commit on, 128 MB shared
buffers), a fresh database for every run. Both are durable per ACK; ours groups the commits.

With authentication on, ``benchmarks/auth_load.py`` (the same relay-mode exchange at a fixed
offered rate, signing every REQUEST and checking the MAC of every reply) drives our server,
whose store holds one CE with its own key per simulated client; the same generator without
authentication drives Kea and our server with authentication off, so the ratio is taken
generator for generator, and the perfdhcp and auth_load figures for the same server show
whether the generator itself was the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "tests" / "netns"))
sys.path.append(str(ROOT / "benchmarks"))
sys.path.append(str(ROOT / "tests" / "server"))
from auth_load import prepare_ces  # noqa: E402
from netns import Lab, Namespace, Process, wait_for  # noqa: E402
from pg_cluster import Cluster, running_cluster, unavailable_reason  # noqa: E402

SERVE = ROOT / "tests" / "server" / "interop" / "serve.py"
AUTH_LOAD = ROOT / "benchmarks" / "auth_load.py"
CLIENTS = 50000
SERVER, GENERATOR = "10.77.0.1", "10.77.0.2"
POOL = "10.77.1.0-10.77.255.254"


@dataclass
class Run:
    offered: int
    achieved: float
    drops: float  # percent, the worse of DISCOVER-OFFER and REQUEST-ACK
    non_unique: int


@dataclass
class Result:
    name: str
    runs: list[Run]

    @property
    def best(self) -> Run | None:
        good = [r for r in self.runs if r.drops < 1.0 and r.non_unique == 0]
        return max(good, key=lambda r: r.achieved) if good else None


def server_and_generator(lab: Lab) -> tuple[Namespace, Namespace]:
    """The two namespaces every run uses, linked, with static neighbours (no ARP in the figures)."""
    srv, gen = lab.namespace("srv"), lab.namespace("gen")
    lab.link(srv, gen, a_address=f"{SERVER}/16", b_address=f"{GENERATOR}/16")
    lab.neighbour(srv, GENERATOR, lab.mac(gen))
    lab.neighbour(gen, SERVER, lab.mac(srv))
    return srv, gen


def kea_config(workdir: Path) -> dict[str, object]:
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "udp"},
            "lease-database": {"type": "memfile", "persist": True, "name": str(workdir / "kea-leases4.csv")},
            "multi-threading": {"enable-multi-threading": False},
            "valid-lifetime": 3600,
            "renew-timer": 1800,
            "rebind-timer": 3150,
            "subnet4": [{"id": 1, "subnet": "10.77.0.0/16", "pools": [{"pool": POOL}]}],
            "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "WARN"}],
        }
    }


def start_ours(
    srv: Namespace,
    workdir: Path,
    auth: str,
    ces: Path | None = None,
    *,
    quarantine: bool = False,
    cluster: Cluster | None = None,
) -> Process:
    """Our server on a fresh store (a copy of ``ces`` if given; a new database of ``cluster``
    if given). perfdhcp resends the same client's messages in bursts, so quarantine is off
    for it; auth_load runs with it on."""
    store = workdir / f"ours-{auth}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    if ces is not None:
        shutil.copyfile(ces, store)
    where = (
        ["--store", str(store)] if cluster is None else ["--pg-dsn", cluster.dsn(cluster.create_database())]
    )
    server = srv.start(
        "taskset", "-c", "1", sys.executable, str(SERVE), *where,
        "--network", "10.77.0.0/16", "--pool", POOL, "--server-id", SERVER,
        "--auth", auth, *([] if quarantine else ["--no-quarantine"]),
        name=f"ours-{auth}",
    )  # fmt: skip
    wait_for(lambda: "READY" in server.log() or not server.running(), 20, what="our server")
    if not server.running():
        raise RuntimeError(server.log())
    return server


KEA_PGSQL_SCHEMA = Path("/usr/share/kea/scripts/pgsql/dhcpdb_create.pgsql")


def kea_postgresql(cluster: Cluster) -> dict[str, object]:
    """A new database with Kea's schema, as Kea's ``lease-database``."""
    name = cluster.create_database()
    psql = shutil.which("psql") or "/usr/bin/psql"
    subprocess.run(
        [psql, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(KEA_PGSQL_SCHEMA), cluster.dsn(name)],
        check=True,
        capture_output=True,
    )
    return {
        "type": "postgresql",
        "name": name,
        "host": str(cluster.directory),
        "port": cluster.port,
        "user": "postgres",
    }


def start_kea(srv: Namespace, workdir: Path, cluster: Cluster | None = None) -> Process:
    (workdir / "kea-leases4.csv").unlink(missing_ok=True)
    conf = workdir / "kea-dhcp4.json"
    config = kea_config(workdir)
    if cluster is not None:
        config["Dhcp4"]["lease-database"] = kea_postgresql(cluster)  # type: ignore[index]
    conf.write_text(json.dumps(config))
    env = {**os.environ, "KEA_LOCKFILE_DIR": str(workdir), "KEA_PIDFILE_DIR": str(workdir)}
    kea = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"
    server = srv.start("taskset", "-c", "1", kea, "-c", str(conf), name="kea", env=env)
    # Kea logs nothing at WARN when it starts well: wait until it holds port 67.
    wait_for(
        lambda: ":67 " in srv.run("ss", "-uln", check=False).stdout or not server.running(),
        20,
        what="kea-dhcp4 listening",
    )
    if not server.running():
        raise RuntimeError(server.log())
    return server


def perfdhcp(gen: Namespace, rate: int, seconds: int) -> Run:
    argv = ["taskset", "-c", "0", "perfdhcp", "-4", "-g", "single", "-l", GENERATOR, "-r", str(rate)]
    argv += ["-R", str(CLIENTS), "-p", str(seconds), "-W", "1000000", "-s", "42", "-t", str(seconds), SERVER]
    return parse_report(rate, gen.run(*argv, timeout=seconds + 60, check=False).stdout)


def auth_load(gen: Namespace, rate: int, seconds: int, *, auth: bool) -> Run:
    argv = ["taskset", "-c", "0", sys.executable, str(AUTH_LOAD), SERVER, "--relay", GENERATOR]
    argv += ["--rate", str(rate), "--seconds", str(seconds), "--clients", str(CLIENTS)]
    argv += ["--auth"] if auth else []
    out = gen.run(*argv, timeout=seconds + 120, check=False).stdout
    if auth and "replies failing authentication: 0" not in out:
        raise RuntimeError(f"replies that fail authentication:\n{out}")
    return parse_report(rate, out)


def parse_report(rate: int, out: str) -> Run:
    achieved = float(re.search(r"Rate: ([0-9.]+)", out).group(1)) if "Rate:" in out else 0.0  # type: ignore[union-attr]
    drops = [float(x) for x in re.findall(r"drops ratio: ([0-9.]+)", out)]
    non_unique = sum(int(x) for x in re.findall(r"non unique addresses: (\d+)", out))
    return Run(rate, achieved, max(drops) if drops else 100.0, non_unique)


Load = Callable[[Namespace, int, int], Run]


@dataclass
class Contender:
    name: str
    start: Callable[[], Process]
    load: Load
    peer: str  # the Kea row this one is compared with (same generator)


def measure_interleaved(
    contenders: list[Contender], gen: Namespace, rates: list[int], seconds: int
) -> list[Result]:
    """At each offered rate every contender runs once, back to back, so a burst of load on
    the machine hits them alike; a contender stops after two rates in a row at >= 1% drops."""
    results = [Result(c.name, []) for c in contenders]
    failures = [0] * len(contenders)
    for rate in rates:
        for index, contender in enumerate(contenders):
            if failures[index] >= 2:
                continue
            server = contender.start()  # an empty lease store for every run
            try:
                run = contender.load(gen, rate, seconds)
            finally:
                server.stop()
            results[index].runs.append(run)
            failures[index] = failures[index] + 1 if run.drops >= 1.0 else 0
            print(
                f"  {contender.name:<40} offered {rate:>6}/s  achieved {run.achieved:>9.1f}/s  "
                f"drops {run.drops:6.3f}%  non-unique {run.non_unique}",
                flush=True,
            )
        if all(f >= 2 for f in failures):
            break
    return results


def table(contenders: list[Contender], results: list[Result]) -> None:
    by_name = {r.name: r for r in results}
    print(
        "\n| server (generator) | max 4-way exchanges/s (< 1% drops) | vs Kea "
        "| peak achieved (any drops) | vs Kea |"
    )
    print("|---|---:|---:|---:|---:|")
    for contender, result in zip(contenders, results, strict=True):
        peer = by_name[contender.peer]
        kea, kea_peak = peer.best, max((r.achieved for r in peer.runs), default=0.0)
        best = result.best
        figure = f"{best.achieved:,.0f}" if best else "n/a"
        ratio = f"{best.achieved / kea.achieved:.0%}" if best and kea and kea.achieved else "n/a"
        peak = max((r.achieved for r in result.runs), default=0.0)
        peak_ratio = f"{peak / kea_peak:.0%}" if kea_peak else "n/a"
        print(f"| {result.name} | {figure} | {ratio} | {peak:,.0f} | {peak_ratio} |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rates", default="1000,2000,3000,4000,6000,8000,12000,16000,20000,24000")
    parser.add_argument(
        "--generators", default="perfdhcp,auth_load", help="perfdhcp, auth_load or both (comma-separated)"
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: perfdhcp only, ours and Kea on SQLite/memfile and on PostgreSQL",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    generators = set(args.generators.split(","))
    if args.store == "postgresql":
        reason = unavailable_reason()
        if reason is not None:
            parser.error(reason)
        with running_cluster({"shared_buffers": "128MB", "max_connections": "40"}) as cluster:
            return run_postgresql(cluster, rates, args.seconds)
    with tempfile.TemporaryDirectory(prefix="cea-bench-") as tmp:
        workdir = Path(tmp)
        lab = Lab(workdir)
        try:
            srv, gen = server_and_generator(lab)
            contenders: list[Contender] = []
            if "perfdhcp" in generators:
                kea = "Kea memfile 1 thread (perfdhcp)"
                contenders += [
                    Contender(
                        "ours, auth off (perfdhcp)", lambda: start_ours(srv, workdir, "off"), perfdhcp, kea
                    ),
                    Contender(
                        "ours, auth optional (perfdhcp)",
                        lambda: start_ours(srv, workdir, "optional"),
                        perfdhcp,
                        kea,
                    ),
                    Contender(kea, lambda: start_kea(srv, workdir), perfdhcp, kea),
                ]
            if "auth_load" in generators:
                ces = workdir / "ces.sqlite"
                prepare_ces(ces, CLIENTS, IPv4Network("10.77.0.0/16"))
                kea = "Kea memfile 1 thread (auth_load, unsigned)"

                def signed(g: Namespace, rate: int, seconds: int) -> Run:
                    return auth_load(g, rate, seconds, auth=True)

                def unsigned(g: Namespace, rate: int, seconds: int) -> Run:
                    return auth_load(g, rate, seconds, auth=False)

                contenders += [
                    Contender(
                        "ours, auth required (auth_load, signed)",
                        lambda: start_ours(srv, workdir, "required", ces, quarantine=True),
                        signed,
                        kea,
                    ),
                    Contender(
                        "ours, auth off (auth_load, unsigned)",
                        lambda: start_ours(srv, workdir, "off"),
                        unsigned,
                        kea,
                    ),
                    Contender(kea, lambda: start_kea(srv, workdir), unsigned, kea),
                ]
            results = measure_interleaved(contenders, gen, rates, args.seconds)
        finally:
            lab.close()
    table(contenders, results)
    return 0


def run_postgresql(cluster: Cluster, rates: list[int], seconds: int) -> int:
    """perfdhcp against ours and Kea, each on its file store and on PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="cea-bench-") as tmp:
        workdir = Path(tmp)
        lab = Lab(workdir)
        try:
            srv, gen = server_and_generator(lab)
            memfile, kea_pg = "Kea memfile 1 thread (perfdhcp)", "Kea PostgreSQL 1 thread (perfdhcp)"
            contenders = [
                Contender(
                    "ours, SQLite, auth off (perfdhcp)",
                    lambda: start_ours(srv, workdir, "off"),
                    perfdhcp,
                    memfile,
                ),
                Contender(memfile, lambda: start_kea(srv, workdir), perfdhcp, memfile),
                Contender(
                    "ours, PostgreSQL, auth off (perfdhcp)",
                    lambda: start_ours(srv, workdir, "off", cluster=cluster),
                    perfdhcp,
                    kea_pg,
                ),
                Contender(kea_pg, lambda: start_kea(srv, workdir, cluster), perfdhcp, kea_pg),
            ]
            results = measure_interleaved(contenders, gen, rates, seconds)
        finally:
            lab.close()
    table(contenders, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
