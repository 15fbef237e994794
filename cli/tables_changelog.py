"""Reading tables' changelogs over the Kafka protocol, for ``streamer tables``.

A table ``T`` of app ``A`` is backed by the compacted topic ``A-T-changelog``: at each
checkpoint a worker writes one record per changed key (the key as the table encodes it, the
value, or None for a delete) to the partition the key belongs to, so a key's value as of the
last checkpoint is the last record for it in that partition. This module finds the log
(``--broker``: an address, or an embedded log's folder served by its worker), encodes keys
as tables do (:data:`streamer.topics.AUTO_KEY`), recognizes windows of a key, and reads
partitions from their start to the end offsets they have when the read begins.

aiokafka is imported by the functions that use it, so the CLI starts without it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from streamer.topics import AUTO_KEY

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import ConsumerRecord, TopicPartition

__all__ = [
    "CHANGELOG_SUFFIX",
    "DEFAULT_BROKER",
    "DEFAULT_DATA",
    "ChangelogRecord",
    "TableCommandError",
    "TableKey",
    "changelog_partitions",
    "changelog_topic",
    "latest_records",
    "parse_key",
    "read_changelog",
    "resolve_bootstrap",
    "table_consumer",
    "window_of",
]

DEFAULT_DATA = "./streamer-data"
DEFAULT_BROKER = "127.0.0.1:9092"
CHANGELOG_SUFFIX = "-changelog"
POLL_INTERVAL_MS = 200
FETCH_RECORDS_MAX = 10_000
WINDOW_TAG = "w"  # ["w", key, start_ms, end_ms]: a window of a declarative aggregation


class TableCommandError(click.ClickException):
    """Why a tables command failed, in one line; click prints it on stderr and exits 1."""


@dataclass(frozen=True, slots=True)
class TableKey:
    value: Any  # as the user gave it: a str, or the decoded --key-json
    raw: bytes  # as the table stores it

    def __str__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class ChangelogRecord:
    partition: int
    offset: int
    key: bytes
    value: bytes | None  # None: the key was deleted


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}{CHANGELOG_SUFFIX}"


def parse_key(text: str, as_json: bool) -> TableKey:
    """KEY as the table encodes it (:data:`streamer.topics.AUTO_KEY`)."""
    value: Any = text
    if as_json:
        try:
            value = json.loads(text)
        except ValueError as error:
            raise click.BadParameter(f"{text!r} is not JSON: {error}", param_hint="KEY") from None
        if value is None:
            raise click.BadParameter("table keys cannot be null", param_hint="KEY")
    raw = AUTO_KEY.dumps(value)
    assert raw is not None
    return TableKey(value, raw)


def window_of(raw_key: bytes, key: TableKey) -> tuple[int, int] | None:
    """``(start_ms, end_ms)`` if ``raw_key`` is a window of ``key``, else None."""
    if not raw_key.startswith(b"["):
        return None
    try:
        decoded = json.loads(raw_key)
    except ValueError:
        return None
    if len(decoded) == 4 and decoded[0] == WINDOW_TAG:
        decoded = decoded[1:]
    if len(decoded) != 3:
        return None
    user_key, start_ms, end_ms = decoded
    if type(start_ms) is not int or type(end_ms) is not int:
        return None
    # Compared encoded, as partitions are: the int 5 and the string "5" are the same key.
    return (start_ms, end_ms) if AUTO_KEY.dumps(user_key) == key.raw else None


def resolve_bootstrap(value: str | None) -> list[str]:
    """Broker addresses from ``--broker``: ``HOST:PORT`` (or ``kafka://``), or the folder of
    an embedded log, served by the worker its ``worker.json`` names."""
    from streamer.cli.topics import parse_bootstrap

    from streamer.transport.embedded import read_worker_address

    if value is None:
        found = read_worker_address(DEFAULT_DATA) if os.path.isdir(DEFAULT_DATA) else None
        value = DEFAULT_DATA if found is not None and found[0] is not None else DEFAULT_BROKER
    if value.startswith("memory://"):
        raise click.BadParameter(
            "a memory:// log lives inside its worker: pass the address the worker logs "
            "(\"the log is served at HOST:PORT\")", param_hint="--broker")
    folder = value.removeprefix("file://")
    if value.startswith("file://") or os.path.isdir(folder):
        return [_served_address(folder)]
    try:
        addresses: list[str] = parse_bootstrap(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--broker") from None
    return addresses


def _served_address(folder: str) -> str:
    from streamer.transport.embedded import ADDRESS_FILE, read_worker_address

    found = read_worker_address(folder)
    address, pid = found if found is not None else (None, None)
    if address is None:
        raise TableCommandError(
            f"no worker serves the log in {folder} (no address in "
            f"{os.path.join(folder, ADDRESS_FILE)}): start one with streamer worker, or pass "
            "--broker HOST:PORT")
    host, port = address
    if pid is not None and not _alive(pid):
        raise TableCommandError(
            f"the worker that served the log in {folder} (process {pid}) is not running: "
            "start one with streamer worker; tables are read through a running worker")
    return f"{host}:{port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def table_consumer(bootstrap: Sequence[str], timeout_s: float) -> AIOKafkaConsumer:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap), client_id="streamer-tables", group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        # An exactly-once worker's changelog holds aborted transactions: never show them.
        isolation_level="read_committed",
        request_timeout_ms=int(max(timeout_s, 1.0) * 1000),
    )


async def changelog_partitions(
    bootstrap: Sequence[str], timeout_s: float, app_id: str
) -> dict[str, int]:
    """``{table: partitions}`` of the app's changelog topics."""
    from streamer.cli.topics import list_topics

    prefix = f"{app_id}-"
    return {
        t.topic[len(prefix):-len(CHANGELOG_SUFFIX)]: t.partitions
        for t in await list_topics(bootstrap, timeout_s)
        if t.topic.startswith(prefix) and t.topic.endswith(CHANGELOG_SUFFIX)
        and len(t.topic) > len(prefix) + len(CHANGELOG_SUFFIX)
    }


async def _scan(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout_s: float
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of ``tps`` from their start to the end offsets they have now; records
    written meanwhile are left out, so the answer is one moment's."""
    if not tps:
        return
    ends = {tp: int(end) for tp, end in (await consumer.end_offsets(list(tps))).items()}
    consumer.assign(list(tps))
    await consumer.seek_to_beginning(*tps)
    pending = dict(ends)
    loop = asyncio.get_running_loop()
    progress_s = loop.time()
    while True:
        for tp in list(pending):
            if await consumer.position(tp) >= pending[tp]:
                del pending[tp]
        if not pending:
            return
        batches = await consumer.getmany(*pending, timeout_ms=POLL_INTERVAL_MS,
                                         max_records=FETCH_RECORDS_MAX)
        if any(batches.values()):
            progress_s = loop.time()
        elif loop.time() - progress_s > timeout_s:
            positions = {tp: await consumer.position(tp) for tp in pending}
            stuck = ", ".join(f"{tp.topic}[{tp.partition}] at offset {positions[tp]} of {end}"
                              for tp, end in pending.items())
            raise TableCommandError(f"no records for {timeout_s:g} s reading {stuck}")
        for tp, records in batches.items():
            end = ends[tp]
            for record in records:
                if record.offset < end:
                    yield record


async def latest_records(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], timeout_s: float,
    wanted: Callable[[bytes], bool] | None = None,
) -> dict[tuple[str, bytes], ChangelogRecord]:
    """``{(topic, key): its last record}``, deletes included (a None value)."""
    latest: dict[tuple[str, bytes], ChangelogRecord] = {}
    async for record in _scan(consumer, tps, timeout_s):
        key = record.key
        if key is None or (wanted is not None and not wanted(key)):
            continue
        latest[record.topic, key] = ChangelogRecord(record.partition, record.offset, key,
                                                    record.value)
    return latest


async def read_changelog(
    bootstrap: Sequence[str], timeout_s: float, topic: str, partitions: Iterable[int],
    *, wanted: Callable[[bytes], bool] | None = None,
) -> dict[bytes, ChangelogRecord]:
    """The last record of each key of ``partitions`` of ``topic`` (deletes included, as
    records with a None value); ``wanted(raw_key)`` keeps only the keys it accepts."""
    from aiokafka.structs import TopicPartition
    from streamer.cli.topics import connected

    tps = [TopicPartition(topic, p) for p in partitions]
    async with connected(table_consumer(bootstrap, timeout_s), bootstrap, timeout_s) as consumer:
        latest = await latest_records(consumer, tps, timeout_s, wanted)
    return {key: record for (_, key), record in latest.items()}
