"""``streamer tables``: read an app's tables from their changelogs, over the Kafka protocol
(:mod:`streamer.cli.tables_changelog`), like any Kafka client, from a running worker's served
log or a ``streamer broker``:

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
Values are shown as JSON when they are JSON, else as a Python bytes literal.

Nothing here imports aiokafka until a command runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from streamer.partitioner import KeyPartitioner

from .tables_changelog import (
    CHANGELOG_SUFFIX,
    DEFAULT_BROKER,
    DEFAULT_DATA,
    ChangelogRecord,
    TableCommandError,
    TableKey,
    changelog_partitions,
    changelog_topic,
    latest_records,
    parse_key,
    read_changelog,
    resolve_bootstrap,
    table_consumer,
    window_of,
)

__all__ = ["KEY_COUNT_RECORDS_MAX", "tables", "value_json", "value_text"]

KEY_COUNT_RECORDS_MAX = 200_000  # `list` counts keys while it reads at most this many records

_partitioner = KeyPartitioner()


# -- how values are shown -------------------------------------------------------------------


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


def _no_such_table(app_id: str, table: str, known: Sequence[str]) -> TableCommandError:
    tables_text = (f"its tables: {', '.join(sorted(known))}" if known
                   else f"no topic of this log is named {app_id}-<table>{CHANGELOG_SUFFIX}")
    return TableCommandError(
        f"app {app_id!r} has no table {table!r}: no topic {changelog_topic(app_id, table)!r} "
        f"({tables_text})")


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

    def missing(self, partition: int, why: str) -> TableCommandError:
        """``why`` the key has no value; ``{where}`` in it names the changelog partition."""
        where = f"{self.topic}[{partition}]"
        return TableCommandError(f"key {self.key} in table {self.table!r} of app "
                                 f"{self.app_id!r}: {why.format(where=where)}")

    def as_document(self, partition: int, **fields: Any) -> str:
        return json.dumps({"app": self.app_id, "table": self.table, "key": self.key.value,
                           "partition": partition, **fields}, ensure_ascii=False)


async def _get(bootstrap: Sequence[str], timeout_s: float, request: _GetRequest
               ) -> tuple[int, list[ChangelogRecord]]:
    """The key's partition and its records: one for a plain key (possibly a delete), the
    live windows with --windowed."""
    known = await changelog_partitions(bootstrap, timeout_s, request.app_id)
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
    record = records[0] if records else None
    if record is None:
        raise request.missing(partition, "not found ({where} read to its end)")
    if record.value is None:
        raise request.missing(partition, f"not found: deleted at offset {record.offset} of "
                                         "{where}")
    if request.as_json:
        click.echo(request.as_document(partition, offset=record.offset,
                                       value=value_json(record.value)))
    else:
        click.echo(value_text(record.value))


def _print_windows(request: _GetRequest, partition: int, records: list[ChangelogRecord]) -> None:
    windows = sorted((((window_of(r.key, request.key) or (0, 0)), r) for r in records),
                     key=lambda window: window[0])
    if not windows:
        raise request.missing(partition, "no windows ({where} read to its end)")
    if request.as_json:
        click.echo(request.as_document(partition, windows=[
            {"start_ms": start, "end_ms": end, "offset": r.offset,
             "value": value_json(r.value or b"")} for (start, end), r in windows]))
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

    known = await changelog_partitions(bootstrap, timeout_s, app_id)
    if not known:
        raise TableCommandError(
            f"app {app_id!r} has no tables on this log: no topic is named "
            f"{app_id}-<table>{CHANGELOG_SUFFIX} (see: streamer topics list)")
    tps = {table: [TopicPartition(changelog_topic(app_id, table), p) for p in range(count)]
           for table, count in sorted(known.items())}
    every = [tp for table_tps in tps.values() for tp in table_tps]
    async with connected(table_consumer(bootstrap, timeout_s), bootstrap, timeout_s) as consumer:
        starts = {tp: int(at) for tp, at in (await consumer.beginning_offsets(every)).items()}
        ends = {tp: int(at) for tp, at in (await consumer.end_offsets(every)).items()}
        counted, budget = [], KEY_COUNT_RECORDS_MAX  # tables small enough to read whole
        for table_tps in tps.values():
            records = sum(ends[tp] - starts[tp] for tp in table_tps)
            if records <= budget:
                counted += table_tps
                budget -= records
        latest = await latest_records(consumer, counted, timeout_s)
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


def _log_options(command: Any) -> Any:
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
@_log_options
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
@_log_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def tables_list(app_id: str, broker: str | None, timeout_s: float, as_json: bool) -> None:
    """The tables of app APP: partitions, live keys (counted when the changelogs are small
    enough to read whole) and the end offset of each changelog partition."""
    run_tables_list(resolve_bootstrap(broker), timeout_s, app_id, as_json)
