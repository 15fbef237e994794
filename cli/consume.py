"""``streamer consume TOPIC``: print messages, like ``kcat -C``.

Where it starts, per partition:

- ``--offset beginning|end|N|-N``: there (``-N``: N messages before the end); an offset outside
  the log is moved to its nearer end, with a note on stderr.
- ``--from-beginning``: the start of the log. With ``--group`` it only applies where the group
  has no committed offset (as in Kafka's console consumer); ``--offset`` overrides commits.
- otherwise: the group's committed offset with ``--group``, else the end (new messages only).

Without ``--partition`` and with ``--group`` it joins the group and reads what the group
assigns it; with ``--partition`` (repeatable) it reads those partitions and, with ``--group``,
commits to the group without joining it. With ``--group`` it commits the offsets of the
messages it has *printed* (written and flushed to stdout), every ``COMMIT_INTERVAL_S`` and on
exit, so the next consumer of the group continues after the last printed message. For an
assigned partition it printed nothing from, it commits where it started, so that where the group
started (``--from-beginning``, ``--offset``) holds for the next consumer too.

It stops after ``--count`` messages, after ``--timeout`` seconds without a message (the clock
starts with the command, so joining a group counts), on Ctrl-C or SIGTERM, or when stdout
closes (``| head``); each commits and closes. The exit code is 0, except 1 when ``--timeout``
ends it before ``--count`` messages arrived, or a final commit fails.

Output, one message per line:

- default: the value alone (kcat's ``%s``), bytes as they are.
- ``--format TEMPLATE``: a ``str.format`` template over ``{topic}``, ``{partition}``,
  ``{offset}``, ``{key}``, ``{value}``, ``{timestamp}`` and ``{headers}``; a null key or
  value is empty, ``{headers}`` is ``name=value,...``, ``{timestamp}`` is milliseconds since the
  epoch, ``\\t`` and ``\\n`` are a tab and a newline. Bytes that are not UTF-8 are written as
  they are.
- ``--json``: one object per line with ``topic``, ``partition``, ``offset``, ``timestamp``,
  ``timestamp_type`` ("CreateTime" or "LogAppendTime"), ``key``, ``value`` and ``headers`` (a
  list of ``{"key", "value"}``, so ``jq '.headers | from_entries'`` makes an object). A key or
  value is a JSON string when it is valid UTF-8, ``null`` when null, and otherwise the object
  ``{"base64": "..."}``; header values likewise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Literal

import click
from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from streamer.cli.topics import (
    ClientCommandError,
    connected,
    list_topics,
    run_client,
    unescape,
)

__all__ = [
    "FORMAT_FIELDS",
    "OffsetSpec",
    "parse_format",
    "parse_offset_spec",
    "record_json",
    "record_text",
    "run_consume",
]

FORMAT_FIELDS = ("topic", "partition", "offset", "key", "value", "timestamp", "headers")

POLL_INTERVAL_MS = 200  # how long a fetch waits for messages before the loop looks around
FETCH_RECORDS_MAX = 500  # messages taken per poll
COMMIT_INTERVAL_S = 1.0
COMMIT_WAIT_S = 10.0  # a commit that cannot find the group's coordinator gives up
POSITION_WAIT_S = 1.0  # a partition still looking for its start is left for the next commit
REQUEST_TIMEOUT_S_MIN = 30.0  # group joins wait on other members; keep room for them
StopReason = Literal["count", "idle", "signal", "output closed"]
TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime"}
# Bytes that are not UTF-8 pass through text output unchanged, by way of lone surrogates.
BYTES_AS_TEXT = "surrogateescape"


@dataclass(frozen=True)
class OffsetSpec:
    """Where ``--offset`` starts: ``beginning``, ``end``, ``absolute`` N, or ``from_end`` N."""

    kind: Literal["beginning", "end", "absolute", "from_end"]
    value: int = 0

    def target(self, log_start: int, log_end: int) -> int:
        """The offset to start at in a log holding ``[log_start, log_end)``, clamped to it."""
        wanted = {
            "beginning": log_start, "end": log_end, "absolute": self.value,
            "from_end": log_end - self.value,
        }[self.kind]
        return min(max(wanted, log_start), log_end)


def parse_offset_spec(text: str) -> OffsetSpec:
    word = text.strip().lower()
    if word in ("beginning", "earliest", "start"):
        return OffsetSpec("beginning")
    if word in ("end", "latest"):
        return OffsetSpec("end")
    if word.lstrip("-").isdigit():
        number = int(word)
        return OffsetSpec("from_end", -number) if number < 0 else OffsetSpec("absolute", number)
    raise click.BadParameter(
        f"{text!r}: expected beginning, end, an offset N, or -N (N before the end)",
        param_hint="--offset",
    )


def _text(data: bytes | None) -> str:
    return "" if data is None else data.decode("utf-8", BYTES_AS_TEXT)


def _format_values(record: ConsumerRecord[bytes, bytes]) -> dict[str, object]:
    return {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "key": _text(record.key), "value": _text(record.value),
        "timestamp": record.timestamp,
        "headers": ",".join(f"{name}={_text(value)}" for name, value in record.headers),
    }


def parse_format(template: str) -> str:
    """``--format`` with its escapes read, checked against a sample message."""
    template = unescape(template)
    sample = dict.fromkeys(FORMAT_FIELDS, "") | dict.fromkeys(
        ("partition", "offset", "timestamp"), 0
    )
    try:
        template.format_map(sample)
    except KeyError as error:
        raise click.BadParameter(
            f"unknown field {{{error.args[0]}}}; the fields are "
            + " ".join(f"{{{f}}}" for f in FORMAT_FIELDS),
            param_hint="--format",
        ) from None
    except (ValueError, IndexError) as error:
        raise click.BadParameter(f"{template!r}: {error}", param_hint="--format") from None
    return template


def record_text(record: ConsumerRecord[bytes, bytes], template: str | None) -> str:
    if template is None:
        return _text(record.value)
    return template.format_map(_format_values(record))


def _json_bytes(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def record_json(record: ConsumerRecord[bytes, bytes]) -> str:
    return json.dumps({
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "timestamp_type": TIMESTAMP_TYPES.get(record.timestamp_type, "unknown"),
        "key": _json_bytes(record.key),
        "value": _json_bytes(record.value),
        "headers": [
            {"key": name, "value": _json_bytes(value)} for name, value in record.headers
        ],
    }, ensure_ascii=False)


@dataclass(frozen=True)
class ConsumeSettings:
    topic: str
    group: str | None
    partitions: tuple[int, ...]
    offset: OffsetSpec | None
    from_beginning: bool
    count: int | None
    idle_timeout_s: float | None
    template: str | None
    as_json: bool


def _note(text: str) -> None:
    click.echo(f"streamer consume: {text}", err=True)


class _PrintedOffsets:
    """The next offset after the last printed message of each partition, and commits of it."""

    def __init__(self, consumer: AIOKafkaConsumer, group: str | None) -> None:
        self.consumer = consumer
        self.group = group
        self.printed: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.last_commit_s = 0.0

    def advance(self, tp: TopicPartition, next_offset: int) -> None:
        self.printed[tp] = next_offset

    async def commit(
        self, partitions: Iterable[TopicPartition] | None = None, *, final: bool = False
    ) -> None:
        self.last_commit_s = asyncio.get_running_loop().time()
        if self.group is None:
            return
        if partitions is None:
            await self._add_start_positions()
        # Only partitions still assigned: a rebalance may have given others away.
        wanted = self.consumer.assignment() & set(
            self.printed if partitions is None else partitions
        )
        offsets = {
            tp: offset for tp, offset in self.printed.items()
            if tp in wanted and self.committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), COMMIT_WAIT_S)
        except (KafkaError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            message = f"cannot commit the offsets of group {self.group!r}: {reason}"
            if final:
                raise ClientCommandError(message) from None
            _note(message)  # a rebalance took the partition; its new owner carries on
            return
        self.committed.update(offsets)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions the group took away; if they come back, the group's commit says where."""
        for tp in partitions:
            self.printed.pop(tp, None)
            self.committed.pop(tp, None)

    async def _add_start_positions(self) -> None:
        """Where each assigned partition it printed nothing from starts: committing that
        makes a start the group has no commit for (--from-beginning, --offset) stick."""
        assigned: set[TopicPartition] = self.consumer.assignment()
        for tp in assigned - self.printed.keys():
            with contextlib.suppress(TimeoutError, KafkaError):
                self.printed[tp] = int(
                    await asyncio.wait_for(self.consumer.position(tp), POSITION_WAIT_S)
                )

    async def maybe_commit(self) -> None:
        if asyncio.get_running_loop().time() - self.last_commit_s >= COMMIT_INTERVAL_S:
            await self.commit()


async def _seek(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], spec: OffsetSpec
) -> None:
    starts = await consumer.beginning_offsets(list(tps))
    ends = await consumer.end_offsets(list(tps))
    for tp in tps:
        start, end = starts[tp], ends[tp]
        target = spec.target(start, end)
        if spec.kind == "absolute" and target != spec.value:
            _note(
                f"partition {tp.partition} holds offsets {start} to {end}; "
                f"starting at {target}, not {spec.value}"
            )
        consumer.seek(tp, target)


class _GroupStart(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks partitions the group assigns for the first time to ``--offset``; commits what
    was printed from partitions the group takes away."""

    def __init__(
        self, consumer: AIOKafkaConsumer, offset: OffsetSpec | None, printed: _PrintedOffsets
    ) -> None:
        self.consumer = consumer
        self.offset = offset
        self.printed = printed
        self.seeked: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.printed.commit(revoked)
        self.printed.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        new = sorted(set(assigned) - self.seeked)
        if self.offset is not None and new:
            await _seek(self.consumer, new, self.offset)
        self.seeked.update(new)


async def _topic_partitions(
    bootstrap: Sequence[str], timeout_s: float, settings: ConsumeSettings
) -> list[int]:
    # The admin client's metadata of all topics: naming the topic in a Metadata request
    # would create it on brokers that auto-create, and aiokafka's consumer only learns a
    # topic's partitions once it reads from it.
    counts = {t.topic: t.partitions for t in await list_topics(bootstrap, timeout_s)}
    if settings.topic not in counts:
        raise ClientCommandError(f"unknown topic {settings.topic!r} (see: streamer topics list)")
    partitions = range(counts[settings.topic])
    missing = [p for p in settings.partitions if p not in partitions]
    if missing:
        raise ClientCommandError(
            f"topic {settings.topic!r} has no partition {', '.join(map(str, missing))} "
            f"(it has partitions 0-{len(partitions) - 1})"
        )
    return list(partitions)


async def _position(
    consumer: AIOKafkaConsumer, settings: ConsumeSettings, printed: _PrintedOffsets,
    partitions: Sequence[int],
) -> None:
    """Assign or subscribe, and seek where the options say."""
    if settings.group is not None and not settings.partitions:
        consumer.subscribe([settings.topic], listener=_GroupStart(
            consumer, settings.offset, printed
        ))
        return
    tps = [TopicPartition(settings.topic, p) for p in settings.partitions or partitions]
    consumer.assign(tps)
    spec = settings.offset
    if spec is None and settings.group is None:
        spec = OffsetSpec("beginning" if settings.from_beginning else "end")
    if spec is not None:  # else the group's committed offsets, or auto_offset_reset
        await _seek(consumer, tps, spec)


class _Output:
    """stdout as bytes: each poll's lines are written and flushed together, so the offsets
    advanced (and later committed) are those of lines that reached the reader."""

    def __init__(self, stream: IO[bytes], settings: ConsumeSettings) -> None:
        self.stream = stream
        self.settings = settings

    def render(self, record: ConsumerRecord[bytes, bytes]) -> bytes:
        if self.settings.as_json:
            text = record_json(record)
        else:
            text = record_text(record, self.settings.template)
        return (text + "\n").encode("utf-8", BYTES_AS_TEXT)

    def write(self, chunks: list[bytes]) -> bool:
        """False if the reader went away (a closed pipe)."""
        try:
            self.stream.write(b"".join(chunks))
            self.stream.flush()
        except BrokenPipeError:
            # Python would complain again flushing stdout at exit; point it at nothing.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            return False
        return True


async def _poll(
    consumer: AIOKafkaConsumer, stop: asyncio.Event
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] | None:
    """One fetch of messages, or None if ``stop`` was set while waiting."""
    fetch = asyncio.ensure_future(
        consumer.getmany(timeout_ms=POLL_INTERVAL_MS, max_records=FETCH_RECORDS_MAX)
    )
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetch
        return None
    batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = fetch.result()
    return batches


async def _print_messages(
    consumer: AIOKafkaConsumer, settings: ConsumeSettings, printed: _PrintedOffsets,
    output: _Output, stop: asyncio.Event,
) -> tuple[int, StopReason]:
    """Print until a stop condition; returns how many messages were printed, and why it
    stopped."""
    loop = asyncio.get_running_loop()
    count = 0
    idle_since_s = loop.time()
    while count != settings.count:
        batches = await _poll(consumer, stop)
        if batches is None:
            return count, "signal"
        if not any(batches.values()):
            idle_s = loop.time() - idle_since_s
            if settings.idle_timeout_s is not None and idle_s >= settings.idle_timeout_s:
                return count, "idle"
            await printed.maybe_commit()
            continue
        idle_since_s = loop.time()
        chunks: list[bytes] = []
        advanced: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            if records and tp not in printed.printed:
                advanced[tp] = records[0].offset  # in case --count leaves all of them out
            for record in records[: None if settings.count is None else settings.count - count]:
                chunks.append(output.render(record))
                advanced[tp] = record.offset + 1
                count += 1
        if not output.write(chunks):
            return count, "output closed"
        for tp, next_offset in advanced.items():
            printed.advance(tp, next_offset)
        await printed.maybe_commit()
    return count, "count"


async def _consume(
    bootstrap: Sequence[str], timeout_s: float, settings: ConsumeSettings
) -> tuple[int, StopReason]:
    partitions = await _topic_partitions(bootstrap, timeout_s, settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap), client_id="streamer-consume",
        group_id=settings.group, enable_auto_commit=False,
        auto_offset_reset="earliest" if settings.from_beginning else "latest",
        request_timeout_ms=int(max(timeout_s, REQUEST_TIMEOUT_S_MIN) * 1000),
    )
    async with connected(consumer, bootstrap, timeout_s):
        printed = _PrintedOffsets(consumer, settings.group)
        await _position(consumer, settings, printed, partitions)
        output = _Output(sys.stdout.buffer, settings)
        # From here a signal stops the loop, which commits what it printed; before, it
        # interrupts as usual (nothing was printed, nothing to commit).
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        try:
            result = await _print_messages(consumer, settings, printed, output, stop)
        finally:
            await printed.commit(final=True)
    return result


def run_consume(
    bootstrap: Sequence[str], timeout_s: float, topic: str, *, group: str | None,
    partitions: Sequence[int], offset: str | None, from_beginning: bool, count: int | None,
    idle_timeout_s: float | None, template: str | None, as_json: bool,
) -> None:
    if template is not None and as_json:
        raise click.UsageError("--format and --json exclude each other")
    if offset is not None and from_beginning:
        raise click.UsageError("--offset and --from-beginning exclude each other")
    settings = ConsumeSettings(
        topic=topic, group=group, partitions=tuple(dict.fromkeys(partitions)),
        offset=parse_offset_spec(offset) if offset is not None else None,
        from_beginning=from_beginning, count=count, idle_timeout_s=idle_timeout_s,
        template=parse_format(template) if template is not None else None, as_json=as_json,
    )
    printed, reason = run_client(_consume(bootstrap, timeout_s, settings), bootstrap)
    if reason == "idle" and count is not None:
        _note(f"{printed} of {count} messages arrived before {idle_timeout_s:g} s idle")
        raise SystemExit(1)
