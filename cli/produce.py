"""``streamer produce TOPIC``: one message per line of stdin, like ``kcat -P``.

Each line, without its ``\\n``, is one message's value (an empty line is an empty value).
``--key-separator SEP`` splits each line at its first SEP into key and value, and a line without
SEP stops the command (as Kafka's console producer does), since sending it keyless would
quietly change where it is partitioned. ``--header NAME=VALUE`` adds headers to every message.

stdin is read by a thread in chunks (whatever is available, up to ``STDIN_CHUNK_BYTES``), so
typed lines go out as they are typed and piped files go out in batches. When stdin ends, or on
Ctrl-C or SIGTERM, what was sent is flushed and a summary goes to stderr: how many messages,
and which offsets of which partitions. The exit code is 0 only if every message was
acknowledged (with ``--acks 0`` the broker acknowledges nothing; then 0 means all were sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError
from streamer.cli.topics import ClientCommandError, connected, run_client, unescape

__all__ = ["ProduceReport", "parse_headers", "run_produce", "split_line"]

STDIN_CHUNK_BYTES = 64 * 1024
STDIN_CHUNKS_QUEUED_MAX = 16  # bounds what the reader thread holds ahead of the producer
LINE_BYTES_MAX = 1024 * 1024  # Kafka's default message.max.bytes is about this
SENDS_PENDING_MAX = 10_000  # unacknowledged sends before waiting for their acknowledgements
LINGER_MS = 5  # lets piped lines share batches; a typed line waits this long at most
ACKS = {"0": 0, "1": 1, "all": "all"}


class LineError(ValueError):
    """A line of stdin cannot become a message; says which line and why."""


def split_line(
    line: bytes, key_separator: bytes | None, line_number: int
) -> tuple[bytes | None, bytes]:
    """(key, value) of one line: split at the first separator, or (None, line) without one."""
    if key_separator is None:
        return None, line
    key, sep, value = line.partition(key_separator)
    if not sep:
        raise LineError(
            f"line {line_number} has no key separator {key_separator.decode()!r}"
        )
    return key, value


def parse_headers(pairs: Sequence[str]) -> list[tuple[str, bytes]]:
    """``NAME=VALUE`` pairs into Kafka headers; names may repeat, as Kafka allows."""
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--header")
        headers.append((name, value.encode()))
    return headers


@dataclass
class ProduceReport:
    """What happened to the messages of one run; ``summary`` is the line printed to stderr."""

    topic: str
    acks: str
    sent: int = 0
    failed: int = 0
    first_error: str | None = None
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition: [first, last]
    counts: dict[int, int] = field(default_factory=dict)

    def acknowledged(self, partition: int, offset: int) -> None:
        self.counts[partition] = self.counts.get(partition, 0) + 1
        span = self.offsets.setdefault(partition, [offset, offset])
        span[0], span[1] = min(span[0], offset), max(span[1], offset)

    def failure(self, error: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = str(error) or type(error).__name__

    def summary(self) -> str:
        delivered = self.sent - self.failed
        plural = "" if self.sent == 1 else "s"
        of_sent = f"{delivered} of {self.sent}" if self.failed else f"{self.sent}"
        text = f"produced {of_sent} message{plural} to {self.topic!r}"
        if self.acks == "0":
            text += " (--acks 0: the broker acknowledges nothing, offsets unknown)"
        elif self.counts:
            text += ": " + ", ".join(
                f"partition {p} " + (
                    f"offset {span[0]}" if span[0] == span[1]
                    else f"offsets {span[0]}-{span[1]}"
                )
                for p, span in sorted(self.offsets.items())
            )
        if self.failed:
            text += f"; {self.failed} failed, first: {self.first_error}"
        return text


@dataclass(frozen=True)
class ProduceSettings:
    topic: str
    key_separator: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]
    acks: str


def _start_stdin_reader(fd: int, queue: asyncio.Queue[bytes | OSError | None]) -> None:
    """Read file descriptor ``fd`` in a daemon thread into ``queue``; ``None`` marks its end.

    A thread, because a blocking read in the event loop would stall the producer's sender
    and a regular file cannot be watched with ``add_reader``; a daemon, so a read still
    blocked on a terminal does not keep the process alive after Ctrl-C. ``os.read`` rather
    than ``sys.stdin.buffer``, whose lock a blocked daemon thread would hold while the
    interpreter shuts down (a fatal error).
    """
    loop = asyncio.get_running_loop()

    def deliver(item: bytes | OSError | None) -> bool:
        put = queue.put(item)
        try:
            asyncio.run_coroutine_threadsafe(put, loop).result()
        except BaseException:  # the loop stopped or closed: nobody reads any more
            put.close()
            return False
        return True

    def pump() -> None:
        while True:
            try:
                chunk = os.read(fd, STDIN_CHUNK_BYTES)
            except OSError as error:
                deliver(error)
                return
            if not deliver(chunk or None) or not chunk:
                return

    threading.Thread(target=pump, name="streamer-produce-stdin", daemon=True).start()


async def _lines(
    queue: asyncio.Queue[bytes | OSError | None], stop: asyncio.Event
) -> AsyncGenerator[bytes, None]:
    """The lines of stdin without their ``\\n``, until it ends or ``stop`` is set."""
    rest = b""
    line_count = 0
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            chunk = asyncio.ensure_future(queue.get())
            await asyncio.wait({chunk, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done():
                chunk.cancel()
                return
            item = chunk.result()
            if isinstance(item, OSError):
                raise ClientCommandError(f"cannot read stdin: {item}")
            if item is None:
                break
            *lines, rest = (rest + item).split(b"\n")
            for line in lines:
                line_count += 1
                yield line
            if len(rest) > LINE_BYTES_MAX:
                raise LineError(f"line {line_count + 1} is longer than {LINE_BYTES_MAX} bytes")
        if rest:
            yield rest
    finally:
        stopped.cancel()


async def _settle(pending: list[asyncio.Future[Any]], report: ProduceReport) -> None:
    """Wait for the acknowledgements of ``pending`` and count them into ``report``."""
    results = await asyncio.gather(*pending, return_exceptions=True)
    pending.clear()
    for result in results:
        if isinstance(result, BaseException):
            report.failure(result)
        elif result is not None:  # None: sent with acks=0, the broker says nothing
            report.acknowledged(result.partition, result.offset)


async def _check_topic(
    producer: AIOKafkaProducer, settings: ProduceSettings, timeout_s: float
) -> None:
    try:
        partitions: set[int] = await asyncio.wait_for(
            producer.partitions_for(settings.topic), timeout_s
        )
    except (UnknownTopicOrPartitionError, TimeoutError):
        raise ClientCommandError(
            f"unknown topic {settings.topic!r}, and the broker did not create it on first use "
            "(see: streamer topics create)"
        ) from None
    if settings.partition is not None and settings.partition not in partitions:
        raise ClientCommandError(
            f"topic {settings.topic!r} has no partition {settings.partition} "
            f"(it has partitions 0-{max(partitions)})"
        )


async def _send_lines(
    producer: AIOKafkaProducer, settings: ProduceSettings, report: ProduceReport,
    stop: asyncio.Event,
) -> None:
    queue: asyncio.Queue[bytes | OSError | None] = asyncio.Queue(STDIN_CHUNKS_QUEUED_MAX)
    _start_stdin_reader(sys.stdin.fileno(), queue)
    pending: list[asyncio.Future[Any]] = []
    line_number = 0
    try:
        async with contextlib.aclosing(_lines(queue, stop)) as lines:
            async for line in lines:
                line_number += 1
                key, value = split_line(line, settings.key_separator, line_number)
                report.sent += 1
                try:
                    pending.append(await producer.send(
                        settings.topic, value, key=key, partition=settings.partition,
                        headers=settings.headers or None,
                    ))
                except KafkaError as error:  # e.g. larger than max_request_size
                    report.failure(error)
                if len(pending) >= SENDS_PENDING_MAX:
                    await _settle(pending, report)
    finally:
        # Whatever stopped the lines, what was sent is flushed and counted.
        await _settle(pending, report)


async def _produce(
    bootstrap: Sequence[str], timeout_s: float, settings: ProduceSettings
) -> tuple[ProduceReport, str | None]:
    producer = AIOKafkaProducer(
        bootstrap_servers=list(bootstrap), client_id="streamer-produce",
        acks=ACKS[settings.acks], linger_ms=LINGER_MS,
        request_timeout_ms=int(timeout_s * 1000),
    )
    report = ProduceReport(settings.topic, settings.acks)
    async with connected(producer, bootstrap, timeout_s):
        await _check_topic(producer, settings, timeout_s)
        if sys.stdin.isatty():
            click.echo("type one message per line; Ctrl-D ends", err=True)
        # From here a signal ends the input: what was sent is flushed and summed up.
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            await _send_lines(producer, settings, report, stop)
        except LineError as error:
            return report, str(error)
    return report, None


def run_produce(
    bootstrap: Sequence[str], timeout_s: float, topic: str, *, key_separator: str | None,
    partition: int | None, headers: Sequence[str], acks: str,
) -> None:
    if key_separator == "":
        raise click.BadParameter("must not be empty", param_hint="--key-separator")
    settings = ProduceSettings(
        topic=topic,
        key_separator=unescape(key_separator).encode() if key_separator is not None else None,
        partition=partition, headers=parse_headers(headers), acks=acks,
    )
    report, stopped_by = run_client(_produce(bootstrap, timeout_s, settings), bootstrap)
    click.echo(report.summary(), err=True)
    if stopped_by is not None:
        raise ClientCommandError(f"{stopped_by}; stopped there")
    if report.failed:
        raise SystemExit(1)
