"""``streamer broker``: serve a log over the Kafka protocol until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click
from rich.console import Console
from rich.logging import RichHandler
from streamer.log import Log
from streamer.log.broker import Broker, BrokerConfig
from streamer.log.server import KafkaServer

from streamer.errors import StreamerError
from streamer.transport.embedded import LogInUseError, lock_log_folder, write_worker_address

__all__ = ["parse_address", "run_broker"]


def parse_address(text: str, default_port: int = 9092) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "127.0.0.1", int(port)


def configure_logging(level: str) -> None:
    """Rich lines on a terminal; plain one-line records otherwise (files, systemd, CI), so
    nothing is wrapped at a guessed width."""
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False,
                              rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # aiokafka narrates every rebalance step at INFO; streamer logs what matters itself.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_broker(
    data: str, listen: str, *, advertise: str | None, default_partitions: int,
    auto_create_topics: bool, loglevel: str,
) -> None:
    configure_logging(loglevel)
    host, port = parse_address(listen)
    advertised = parse_address(advertise) if advertise else (None, None)
    config = BrokerConfig(
        auto_create_topics=auto_create_topics,
        default_partitions=default_partitions,
        advertised_host=advertised[0],
        advertised_port=advertised[1],
    )
    asyncio.run(_serve(data, host, port, config))


async def _serve(data: str, host: str, port: int, config: BrokerConfig) -> None:
    # A durable folder has one owner at a time: this broker, or a worker embedding it (whose
    # address the error names). Workers started on the folder later find this broker there.
    root = None if data == "memory://" else data.removeprefix("file://")
    try:
        lock = None if root is None else await asyncio.to_thread(lock_log_folder, root)
    except LogInUseError as error:
        raise click.ClickException(str(error)) from None
    try:
        await _serve_locked(data, root, host, port, config)
    finally:
        if lock is not None:
            os.close(lock)


async def _serve_locked(
    data: str, root: str | None, host: str, port: int, config: BrokerConfig
) -> None:
    try:
        log = await asyncio.to_thread(Log.open_url, data)
    except (OSError, ValueError, StreamerError) as error:
        raise click.ClickException(f"cannot open the log at {data}: {error}") from None
    server = KafkaServer(Broker(log, config), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        bound_host, bound_port = await server.start()
    except OSError as error:
        await asyncio.to_thread(log.close)
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
    if root is not None:
        await asyncio.to_thread(write_worker_address, root, (bound_host, bound_port), "broker")
    # Scripts and tests wait for this line (port 0 picks a free port).
    print(f"streamer broker listening on {bound_host}:{bound_port} (data: {data})", flush=True)
    await stop.wait()
    logging.getLogger("streamer.broker").info("shutting down: answering in-flight requests")
    await server.close()
    print("streamer broker stopped", file=sys.stderr, flush=True)
