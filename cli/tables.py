"""``streamer tables``: read an app's tables from their changelogs, over the Kafka protocol.

A table ``T`` of app ``A`` is backed by the compacted topic ``A-T-changelog``: at each
checkpoint a worker writes one record per changed key (the key as the table encodes it, the
value, or None for a delete) to the partition the key belongs to. So the value of a key as of
the last checkpoint is the last record for it in that partition, which these commands read
like any Kafka client, from a running worker's served log or a ``streamer broker``:

- ``get APP TABLE KEY``: the partition KEY hashes to (Kafka's murmur2 of the key bytes, as
  the worker chose it), read from its start to its current end; the last record for KEY
  wins. ``--windowed`` reads the windows of KEY instead: records keyed
  ``[KEY, start_ms, end_ms]`` (Faust-style windowed tables) or ``["w", KEY, start_ms,
  end_ms]`` (window aggregations), which live in KEY's partition too.
- ``list APP``: the app's changelog topics, their partitions and end offsets, and their live
  keys when that is cheap (tables are counted while the records read stay within
  ``KEY_COUNT_RECORDS_MAX``).

Keys are encoded as tables encode them by default: a string as UTF-8, and with
``--key-json`` the JSON value (a string still as UTF-8, anything else as compact JSON).

Nothing here imports aiokafka until a command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from streamer.partitioner import KeyPartitioner
from streamer.topics import AUTO_KEY

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import ConsumerRecord, TopicPartition

__all__ = [
    "KEY_COUNT_RECORDS_MAX",
    "ChangelogRecord",
    "TableKey",
    "changelog_topic",
    "parse_key",
    "read_changelog",
    "resolve_bootstrap",
    "tables",
    "value_json",
    "value_text",
    "window_of",
]

DEFAULT_DATA = "./streamer-data"
DEFAULT_BROKER = "127.0.0.1:9092"
CHANGELOG_SUFFIX = "-changelog"
KEY_COUNT_RECORDS_MAX = 200_000  # `list` counts keys when a table's changelog is this small
POLL_INTERVAL_MS = 200
FETCH_RECORDS_MAX = 10_000
WINDOW_TAG = "w"  # ["w", key, start_ms, end_ms]: a window of a declarative aggregation

_partitioner = KeyPartitioner()


class TableCommandError(click.ClickException):
    """Why a tables command failed, in one line; click prints it on stderr and exits 1."""


# -- what is read, and how it is shown -------------------------------------------------------


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
    if len(decoded) != 3 or decoded[0] is None:
        return None
    user_key, start_ms, end_ms = decoded
    if type(start_ms) is not int or type(end_ms) is not int:
        return None
    # Compared encoded, as partitions are: the int 5 and the string "5" are the same key.
    return (start_ms, end_ms) if AUTO_KEY.dumps(user_key) == key.raw else None


def _json_or_missing(raw: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(raw)
    except ValueError:  # UnicodeDecodeError included
        return False, None


def value_text(raw: bytes, *, pretty: bool = True) -> str:
    """A JSON value indented (or compact), other bytes as their repr."""
    is_json, value = _json_or_missing(raw)
    if not is_json:
        return repr(raw)
    return json.dumps(value, indent=2 if pretty else None, ensure_ascii=False)


def value_json(raw: bytes) -> Any:
    """A JSON value as itself; other bytes as ``{"base64": ...}`` (as ``streamer consume``)."""
    is_json, value = _json_or_missing(raw)
    return value if is_json else {"base64": base64.b64encode(raw).decode("ascii")}


def _time_text(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- reaching the log ------------------------------------------------------------------------


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
    except PermissionError:  # another user's process: alive
        return True
    return True


def _consumer(bootstrap: Sequence[str], timeout_s: float) -> AIOKafkaConsumer:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap), client_id="streamer-tables", group_id=None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        request_timeout_ms=int(max(timeout_s, 1.0) * 1000),
    )


async def _changelog_partitions(
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


def _no_such_table(app_id: str, table: str, known: Sequence[str]) -> TableCommandError:
    tables_text = (f"its tables: {', '.join(sorted(known))}" if known
                   else f"no topic of this log is named {app_id}-<table>{CHANGELOG_SUFFIX}")
    return TableCommandError(
        f"app {app_id!r} has no table {table!r}: no topic {changelog_topic(app_id, table)!r} "
        f"({tables_text})")


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


async def _latest(
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
    async with connected(_consumer(bootstrap, timeout_s), bootstrap, timeout_s) as consumer:
        latest = await _latest(consumer, tps, timeout_s, wanted)
    return {key: record for (_, key), record in latest.items()}


# -- get ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GetRequest:
    app_id: str
    table: str
    key: TableKey
    windowed: bool
    as_json: bool

    @property
    def topic(self) -> str:
        return changelog_topic(self.app_id, self.table)


async def _get(bootstrap: Sequence[str], timeout_s: float, request: _GetRequest
               ) -> tuple[int, list[ChangelogRecord]]:
    """The key's partition and its records: one for a plain key (possibly a delete), the
    live windows with --windowed."""
    known = await _changelog_partitions(bootstrap, timeout_s, request.app_id)
    if request.table not in known:
        raise _no_such_table(request.app_id, request.table, list(known))
    key = request.key
    partition = _partitioner.partition(key.raw, known[request.table])
    if not request.windowed:
        found = await read_changelog(bootstrap, timeout_s, request.topic, [partition],
                                     wanted=lambda raw: raw == key.raw)
        return partition, list(found.values())
    found = await read_changelog(bootstrap, timeout_s, request.topic, [partition],
                                 wanted=lambda raw: window_of(raw, key) is not None)
    return partition, [record for record in found.values() if record.value is not None]


def _print_value(request: _GetRequest, partition: int, records: list[ChangelogRecord]) -> None:
    where = f"{request.topic}[{partition}]"
    record = records[0] if records else None
    if record is None:
        raise TableCommandError(
            f"key {request.key} not found in table {request.table!r} of app "
            f"{request.app_id!r} (read {where} to its end)")
    if record.value is None:
        raise TableCommandError(
            f"key {request.key} not found in table {request.table!r} of app "
            f"{request.app_id!r}: deleted at offset {record.offset} of {where}")
    if request.as_json:
        click.echo(json.dumps({
            "app": request.app_id, "table": request.table, "key": request.key.value,
            "partition": partition, "offset": record.offset, "value": value_json(record.value),
        }, ensure_ascii=False))
    else:
        click.echo(value_text(record.value))


def _print_windows(request: _GetRequest, partition: int, records: list[ChangelogRecord]) -> None:
    windows = sorted((((window_of(r.key, request.key) or (0, 0)), r) for r in records),
                     key=lambda window: window[0])
    if not windows:
        raise TableCommandError(
            f"no windows of key {request.key} in table {request.table!r} of app "
            f"{request.app_id!r} (read {request.topic}[{partition}] to its end)")
    if request.as_json:
        click.echo(json.dumps({
            "app": request.app_id, "table": request.table, "key": request.key.value,
            "partition": partition,
            "windows": [{"start_ms": start, "end_ms": end, "offset": r.offset,
                         "value": value_json(r.value or b"")}
                        for (start, end), r in windows],
        }, ensure_ascii=False))
        return
    for (start, end), record in windows:
        value = value_text(record.value or b"", pretty=False)
        click.echo(f"{_time_text(start)}  {_time_text(end)}  {value}")


def run_tables_get(
    bootstrap: Sequence[str], timeout_s: float, request: _GetRequest
) -> None:
    from streamer.cli.topics import run_client

    partition, records = run_client(_get(bootstrap, timeout_s, request), bootstrap)
    if request.windowed:
        _print_windows(request, partition, records)
    else:
        _print_value(request, partition, records)


# -- list --------------------------------------------------------------------------------------


async def _list(bootstrap: Sequence[str], timeout_s: float, app_id: str) -> list[dict[str, Any]]:
    from aiokafka.structs import TopicPartition
    from streamer.cli.topics import connected

    known = await _changelog_partitions(bootstrap, timeout_s, app_id)
    if not known:
        raise TableCommandError(
            f"app {app_id!r} has no tables on this log: no topic is named "
            f"{app_id}-<table>{CHANGELOG_SUFFIX} (see: streamer topics list)")
    tps = {table: [TopicPartition(changelog_topic(app_id, table), p) for p in range(count)]
           for table, count in sorted(known.items())}
    every = [tp for table_tps in tps.values() for tp in table_tps]
    async with connected(_consumer(bootstrap, timeout_s), bootstrap, timeout_s) as consumer:
        starts = {tp: int(at) for tp, at in (await consumer.beginning_offsets(every)).items()}
        ends = {tp: int(at) for tp, at in (await consumer.end_offsets(every)).items()}
        counted, budget = [], KEY_COUNT_RECORDS_MAX  # tables small enough to read whole
        for table_tps in tps.values():
            records = sum(ends[tp] - starts[tp] for tp in table_tps)
            if records <= budget:
                counted += table_tps
                budget -= records
        latest = await _latest(consumer, counted, timeout_s)
    keys = dict.fromkeys(counted, 0)
    for (topic, _), record in latest.items():
        keys[TopicPartition(topic, record.partition)] += record.value is not None
    return [{
        "table": table, "changelog_topic": changelog_topic(app_id, table),
        "keys": sum(keys[tp] for tp in table_tps) if table_tps[0] in keys else None,
        "partitions": [{"partition": tp.partition, "start_offset": starts[tp],
                        "end_offset": ends[tp], "keys": keys.get(tp)} for tp in table_tps],
    } for table, table_tps in tps.items()]


def run_tables_list(bootstrap: Sequence[str], timeout_s: float, app_id: str,
                    as_json: bool) -> None:
    from streamer.cli.topics import run_client

    described = run_client(_list(bootstrap, timeout_s, app_id), bootstrap)
    if as_json:
        click.echo(json.dumps({"app": app_id, "tables": described}, indent=2))
        return
    rows = [("TABLE", "PARTITIONS", "KEYS", "END OFFSETS")]
    for table in described:
        keys = "?" if table["keys"] is None else str(table["keys"])
        ends = ",".join(str(p["end_offset"]) for p in table["partitions"])
        rows.append((table["table"], str(len(table["partitions"])), keys, ends))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())
    if any(table["keys"] is None for table in described):
        click.echo(f"(KEYS ?: not counted, to read at most {KEY_COUNT_RECORDS_MAX:,} changelog "
                   "records)", err=True)


# -- the commands ------------------------------------------------------------------------------


def _broker_option(command: Any) -> Any:
    command = click.option(
        "--request-timeout", "timeout_s", type=click.FloatRange(0, min_open=True),
        default=10.0, show_default=True, metavar="SECONDS",
        help="How long to wait to connect, for each answer, and for records to come.",
    )(command)
    return click.option(
        "--broker", "-b", default=None, envvar="STREAMER_BROKER", show_envvar=True,
        metavar="HOST:PORT|FOLDER",
        help="The log: a broker address (kafka://HOST:PORT also works), or an embedded log's "
             "folder, read through the worker that serves it (its worker.json says where). "
             f"Default: {DEFAULT_DATA} when a worker serves it, else {DEFAULT_BROKER}.",
    )(command)


@click.group()
def tables() -> None:
    """Read an app's tables from their changelog topics, <app>-<table>-changelog.

    What they show is the state as of the workers' last checkpoint (at most the app's
    commit_interval_s old): changes since are still in the workers' memory.
    """


@tables.command("get")
@click.argument("app_id", metavar="APP")
@click.argument("table")
@click.argument("key")
@_broker_option
@click.option("--key-json", is_flag=True,
              help="KEY is JSON (42, '[\"a\", 1]'): for tables keyed by numbers, lists, ...")
@click.option("--windowed", is_flag=True,
              help="Print every window of KEY (records keyed [KEY, start_ms, end_ms] or "
                   "[\"w\", KEY, start_ms, end_ms]), by start.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {app, table, key, partition, offset, value} as one line (with "
                   "--windowed: windows, a list of {start_ms, end_ms, offset, value}).")
def tables_get(
    app_id: str, table: str, key: str, broker: str | None, timeout_s: float, key_json: bool,
    windowed: bool, as_json: bool,
) -> None:
    """Print the value of KEY in TABLE of app APP: a JSON value indented, other bytes as a
    Python bytes literal. Exits 1 if the key or the table is not there.

    Reads the partition of the changelog that KEY hashes to, from its start to its end, so
    it answers as of the last checkpoint of the worker that owns the key (at most the app's
    commit_interval_s old).

    \b
    streamer tables get word-count counts fox --broker ./streamer-data
    streamer tables get shop per-user 42 --key-json --json | jq .value
    streamer tables get shop clicks-per-minute /home --windowed
    """
    request = _GetRequest(app_id, table, parse_key(key, key_json), windowed, as_json)
    run_tables_get(resolve_bootstrap(broker), timeout_s, request)


@tables.command("list")
@click.argument("app_id", metavar="APP")
@_broker_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def tables_list(app_id: str, broker: str | None, timeout_s: float, as_json: bool) -> None:
    """The tables of app APP: partitions, live keys (counted when the changelogs are small
    enough to read whole) and the end offset of each changelog partition."""
    run_tables_list(resolve_bootstrap(broker), timeout_s, app_id, as_json)
