"""``ce-autoconf server run``: the whole server from one validated configuration.

At start, in this order, so that a mistake is reported before anything listens:

1. the secrets file (``[secrets] file``, mode 0600, checked by :func:`load_secrets`) and the
   API token file (``[api] token_file``) are read;
2. the store (``[store]``: SQLite, or PostgreSQL which takes its one-server lock here) is
   opened, wrapped in :class:`~dhcp_server.metrics.TimedStore` (commit
   count and latency for ``/metrics``), and loaded;
3. the keys of the secrets file are merged into the snapshot (:func:`merge_secrets`: the
   file wins for the secret IDs it names, the store keeps the others) and the engine is
   built from it;
4. the UDP driver starts, then the management API when ``[api]`` is configured;
5. ``server.ready`` is logged. Every event is one JSON line (:mod:`dhcp_server.logs`).

SIGTERM or SIGINT stops the API (requests in progress are cut), then the driver: it stops
receiving, lets the commit in flight finish and sends the replies that waited for it, and
the store is closed. ``server.stopped`` is the last line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dhcp_server.api import ApiServer, load_token, start_api
from dhcp_server.config import RuntimeConfig
from dhcp_server.driver import DriverConfig, ServerDriver
from dhcp_server.engine import ServerEngine
from dhcp_server.logs import log_event
from dhcp_server.metrics import TimedStore
from dhcp_server.secrets import load_secrets
from dhcp_server.store import Snapshot, open_store

__all__ = ["SecretsMerge", "check", "merge_secrets", "run", "serve_config"]

log = logging.getLogger("dhcp_server.service")


@dataclass(frozen=True, slots=True)
class SecretsMerge:
    """What :func:`merge_secrets` did: counts and secret IDs only, never a key."""

    from_file: int
    from_store: int  # stored keys kept: secret IDs the file does not name
    overridden: tuple[int, ...]  # secret IDs whose stored key differs from the file's (the file's wins)


def merge_secrets(snapshot: Snapshot, file_keys: Mapping[int, bytes]) -> SecretsMerge:
    """Put the secrets file's keys into ``snapshot.secrets``.

    The file is the operator's source of truth for the secret IDs it names: its key replaces
    a stored one (e.g. a key set through the API for the same secret ID) at every start.
    Keys of other secret IDs (set through the API or the CLI) stay as stored. File keys are
    not written to the store: remove one from the file and it is gone at the next start.
    """
    stored = snapshot.secrets
    overridden = tuple(sorted(i for i, key in file_keys.items() if i in stored and stored[i] != key))
    kept = sum(1 for i in stored if i not in file_keys)
    stored.update(file_keys)
    return SecretsMerge(len(file_keys), kept, overridden)


def check(config: RuntimeConfig) -> dict[int, bytes]:
    """Read what the configuration points to (secrets file, API token); raises
    :class:`~dhcp_server.secrets.SecretsError` or :class:`~dhcp_server.api.TokenFileError`."""
    keys = load_secrets(config.secrets_file) if config.secrets_file is not None else {}
    if config.api is not None:
        load_token(config.api.token_file)
    return keys


async def serve_config(
    config: RuntimeConfig,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[ServerDriver, ApiServer | None], None] | None = None,
) -> Counter[str]:
    """Run the server of ``config`` until ``stop`` is set; returns the driver's and engine's counters."""
    file_keys = check(config)
    store = TimedStore(open_store(config.store))
    try:
        snapshot = store.load()
        merged = merge_secrets(snapshot, file_keys)
        log_event(
            log,
            "secrets.loaded",
            from_file=merged.from_file,
            from_store=merged.from_store,
            overridden=list(merged.overridden),
        )
        if merged.overridden:
            log_event(
                log,
                "secrets.file_overrides_store",
                logging.WARNING,
                overridden=list(merged.overridden),
                note="the secrets file's key is used for these secret IDs, not the one set through the API",
            )
        engine = ServerEngine(config.server, snapshot)
        listen = config.listen
        driver = ServerDriver(
            engine,
            store,
            DriverConfig(
                interfaces=listen.interfaces,
                address=str(listen.address),
                port=listen.port,
                max_queue_delay=listen.max_queue_delay,
            ),
        )
        await driver.start()
        api: ApiServer | None = None
        try:
            if config.api is not None:
                api = await start_api(
                    driver,
                    host=config.api.host,
                    port=config.api.port,
                    token_file=config.api.token_file,
                    metrics_require_token=config.api.metrics_require_token,
                    store=store,
                )
            log_event(
                log,
                "server.ready",
                config=str(config.source),
                store=config.store.describe(),
                vpns=len(engine.directory.vpns),
                ces=len(engine.directory.ces),
                api=api.url if api is not None else None,
            )
            if on_ready is not None:
                on_ready(driver, api)
            await stop.wait()
            log_event(log, "server.stopping")
        finally:
            if api is not None:
                await api.close()
            await driver.stop()
        counters = driver.counters + engine.counters
        log_event(log, "server.stopped", counters=dict(sorted(counters.items())))
        return counters
    finally:
        store.close()


def run(config: RuntimeConfig, *, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Serve until one of ``signals``; the blocking body of ``ce-autoconf server run``."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve_config(config, stop=stop)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    asyncio.run(main())
