"""The apps that ``streamer bench stateful`` runs, one per child process::

    python -m streamer.cli.bench_stateful_apps '{"framework": "quixstreams", ...}'

Two workloads, each written once per framework, over the same page views keyed by user:

count    a keyed count kept in a RocksDB-backed table, and for every event the key's new count
         sent to :data:`COUNTS_TOPIC` as ``{"user", "count"}``, keyed by user:
         streamer: ``n = counts[user] + 1; counts[user] = n; await out.send(...)`` in an agent;
         quixstreams: ``sdf.apply(count, stateful=True).to_topic(out)``, ``count`` doing
         ``state.get`` and ``state.set``
count-eos  the same keyed count, exactly once: streamer with
         ``processing_guarantee="exactly_once"``, quixstreams with
         ``processing_guarantee="exactly-once"``; each checkpoint (streamer) or commit
         (quixstreams) is a transaction holding the outputs, the changelog and the offsets
window   a count per key in 10-second tumbling windows of event time (the record
         timestamp), grace 0, each window sent once, when it closes, to
         :data:`WINDOWS_TOPIC`: streamer:
         ``stream.window(tumbling(10.0), name=...).count().final().to(out)``; quixstreams:
         ``sdf.tumbling_window(10 s).count().final(closing_strategy="partition")``

and a third for streamer alone:

recovery an app with the table ``counts`` whose changelog (1,000,000 keys by default) was
         written before it started and whose state folder is empty: the worker restores the
         whole table before it processes anything. It watches its table in-process and says
         ``done`` when every partition is restored and served; then it reads the whole table
         back (not timed) and says whether every key holds its value.

streamer runs embedded (the log in this process, ``broker=<folder>``) or over the Kafka
protocol (``broker=kafka://HOST:PORT``, a ``streamer broker``); quixstreams against a
``streamer broker``. Each framework keeps its defaults otherwise (commit interval: streamer
1 s, quixstreams 5 s; RocksDB stores; changelogs on).

As in :mod:`streamer.cli.bench_pipeline_apps`, a child imports its framework and builds its
app first, then prints ``start`` and runs until SIGTERM; the harness watches the output
topic's end offsets, except for streamer-embedded, which watches its own (nobody else can
open its log while it runs) and stops itself once every output is durable. Exactly once,
outputs become visible only with their transaction's commit, which also commits the input
offsets: there the group's committed offsets are watched instead, every output being
visible (and durable) once they cover every input event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from streamer.cli.bench_pipeline_apps import (
    JsonSettings,
    _watch_embedded,
    preload,
    run_child,
    run_quix,
    run_until_stopped,
    streamer_broker,
    tell,
)
from streamer.cli.bench_stateful_events import (
    APP_ID,
    COUNTS_TOPIC,
    INPUT_TOPIC,
    TABLE,
    WINDOW_MS,
    WINDOWS_TOPIC,
    changelog_key,
    recovered_value,
)

if TYPE_CHECKING:
    from streamer import App
    from streamer.app import ProcessingGuarantee
    from streamer.tables import Table

__all__ = ["EXACTLY_ONCE", "FRAMEWORKS", "WORKLOADS", "ChildSettings", "main", "output_topic"]

FRAMEWORKS = ("streamer-embedded", "streamer-kafka", "quixstreams")
WORKLOADS = ("count", "count-eos", "window", "recovery")
EXACTLY_ONCE = frozenset({"count-eos"})  # the workloads run with transactions
WINDOW_NAME = "counts-10s"
WATCH_INTERVAL_S = 0.005  # recovery: how often the app looks at its table's partitions
STALL_S_MAX = 120.0  # recovery: no partition restored for this long and it gives up


@dataclass(frozen=True, slots=True)
class ChildSettings(JsonSettings):  # type: ignore[misc]  # mypy sees streamer.cli as Any
    framework: str
    workload: str
    bootstrap: str  # host:port of `streamer broker`, or the log folder for streamer-embedded
    output_topic: str  # "" for recovery
    partitions: int
    expected: int  # outputs a run must produce; for recovery, the table's keys
    state_dir: str  # the run's folder: state stores go under it
    profile_path: str | None  # write a cProfile of the run there


def output_topic(workload: str) -> str:
    topics: dict[str, str] = {"count": COUNTS_TOPIC, "count-eos": COUNTS_TOPIC,
                              "window": WINDOWS_TOPIC, "recovery": ""}
    return topics[workload]


# -- streamer ------------------------------------------------------------------------------


def streamer_app(broker: str, settings: ChildSettings) -> tuple[App, Table | None]:
    """The workload's app, and its table ``counts`` (None for window, whose state is the
    window aggregation's own table)."""
    from streamer.operators import tumbling

    import streamer

    guarantee: ProcessingGuarantee = (
        "exactly_once" if settings.workload in EXACTLY_ONCE else "at_least_once")
    app = streamer.App(APP_ID, broker=broker, listen=None,
                       state_dir=os.path.join(settings.state_dir, "state"),
                       processing_guarantee=guarantee)
    views = app.topic(INPUT_TOPIC, value_type=dict, partitions=settings.partitions)
    if settings.workload == "window":
        out = app.topic(settings.output_topic, value_type=dict, partitions=settings.partitions)

        @app.agent(views)
        async def window(stream: streamer.Stream) -> None:
            # idle_timeout_s=None: windows close on event time alone, as quixstreams' do
            windows = stream.window(tumbling(WINDOW_MS / 1000), name=WINDOW_NAME,
                                    idle_timeout_s=None)
            await windows.count().final().to(out)

        return app, None
    counts = app.table(TABLE, default=int, partitions=settings.partitions)
    if settings.workload in ("count", "count-eos"):
        out = app.topic(settings.output_topic, value_type=dict, partitions=settings.partitions)

        @app.agent(views)
        async def count(stream: streamer.Stream) -> None:
            async for view in stream:
                user = view["user"]
                n = counts[user] + 1
                counts[user] = n
                await out.send(key=user, value={"user": user, "count": n})

    else:  # recovery: the agent is there to be assigned the partitions; it gets no events

        @app.agent(views)
        async def touch(stream: streamer.Stream) -> None:
            async for view in stream:
                counts[view["user"]] += 1

    return app, counts


def run_streamer(settings: ChildSettings) -> None:
    app, counts = streamer_app(streamer_broker(settings), settings)
    preload("streamer.changelogs", "streamer.state")
    restored = _RestoreLog() if settings.workload == "recovery" else None

    async def watch(stop: asyncio.Event) -> None:
        if restored is None and settings.workload in EXACTLY_ONCE:
            await _watch_committed(app, settings, stop)
        elif restored is None:
            await _watch_embedded(app, settings, stop)
        else:
            assert counts is not None
            await _watch_recovery(counts, settings, restored, stop)

    watches = restored is not None or settings.framework == "streamer-embedded"
    run_until_stopped(app, settings, watch if watches else None)


async def _watch_committed(app: App, settings: ChildSettings, stop: asyncio.Event) -> None:
    """Exactly once, embedded: read the group's committed offsets in this process until
    they cover every input event (then every output is visible and durable: the
    transactions that committed them did so after their markers were fsynced); stop."""
    from streamer.transport.embedded import EmbeddedTransport

    while app.worker is None or not app.worker.consuming:
        await asyncio.sleep(WATCH_INTERVAL_S)
    transport = app.worker.transport
    assert isinstance(transport, EmbeddedTransport)
    groups = transport.broker.groups
    wanted = [(INPUT_TOPIC, p) for p in range(settings.partitions)]
    first_at = None
    last, progress_at = 0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(WATCH_INTERVAL_S)
        now = time.monotonic()
        committed = sum(max(c.offset, 0) for c in groups.fetch_offsets(APP_ID, wanted).partitions)
        if committed != last:
            last, progress_at = committed, now
            if first_at is None:
                first_at = now
                tell(first=now)
        if committed >= settings.expected:
            tell(done=now, outputs=committed)
            tell(durable=now)
            stop.set()
        elif now - progress_at > STALL_S_MAX:
            tell(failed=f"{committed} of {settings.expected} input offsets committed, none "
                        f"new in {STALL_S_MAX} s")
            stop.set()


class _RestoreLog(logging.Handler):
    """Keeps the worker's ``restored N records in X s`` line (streamer.changelogs)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.restores: list[tuple[int, float]] = []  # (records, seconds) per restore
        tables = logging.getLogger("streamer.tables")
        tables.setLevel(logging.INFO)
        tables.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if str(record.msg).startswith("restored %d records") and isinstance(args, tuple):
            records, seconds = args[0], args[1]
            assert isinstance(records, int) and isinstance(seconds, float)
            self.restores.append((records, seconds))


async def _watch_recovery(
    counts: Table, settings: ChildSettings, restored: _RestoreLog, stop: asyncio.Event,
) -> None:
    """Say ``done`` when every partition of the table is restored and served (the worker
    puts a partition in ``active`` once its restore finished); then check the table."""
    progress, progress_at = 0, time.monotonic()
    while len(counts.active) < settings.partitions:
        await asyncio.sleep(WATCH_INTERVAL_S)
        now = time.monotonic()
        moved = sum(r.recovered for r in counts.recovery.values()) + len(counts.active)
        if moved != progress:
            progress, progress_at = moved, now
        elif now - progress_at > STALL_S_MAX:
            tell(failed=f"{len(counts.active)} of {settings.partitions} table partitions "
                        f"restored, no progress in {STALL_S_MAX:.0f} s")
            stop.set()
            return
    done = time.monotonic()
    recovered = sum(r.recovered for r in counts.recovery.values())
    tell(done=done, recovered=recovered, restores=restored.restores)
    problem = _check_table(counts, settings.expected)
    tell(checked=time.monotonic(), problem=problem)
    stop.set()


def _check_table(counts: Table, keys: int) -> str:
    """"" when the table holds exactly the changelog's keys and values; else what is wrong."""
    seen = wrong = 0
    example = ""
    for key, value in counts.items():
        seen += 1
        index = int(key.removeprefix("user-")) if key.startswith("user-") else -1
        if index < 0 or index >= keys or changelog_key(index).decode() != key \
                or value != recovered_value(index):
            wrong += 1
            example = example or f"{key!r}: {value!r}"
    if seen != keys or wrong:
        return f"the table holds {seen} keys, {wrong} wrong (e.g. {example}); expected {keys}"
    return ""


# -- quixstreams ---------------------------------------------------------------------------


def quix_count(view: dict[str, Any], state: Any) -> dict[str, Any]:
    n = state.get("count", 0) + 1
    state.set("count", n)
    return {"user": view["user"], "count": n}


def run_quixstreams(settings: ChildSettings) -> None:
    def build(sdf: Any) -> Any:
        if settings.workload == "window":
            # partition: windows close on the partition's largest event time, as streamer's do
            return sdf.tumbling_window(timedelta(milliseconds=WINDOW_MS), name=WINDOW_NAME) \
                .count().final(closing_strategy="partition")
        return sdf.apply(quix_count, stateful=True)

    guarantee: Literal["at-least-once", "exactly-once"] = (
        "exactly-once" if settings.workload in EXACTLY_ONCE else "at-least-once")
    run_quix(settings, APP_ID, INPUT_TOPIC, build, processing_guarantee=guarantee)


# -- the child -----------------------------------------------------------------------------


RUNNERS: dict[str, Callable[[ChildSettings], None]] = {
    "streamer-embedded": run_streamer,
    "streamer-kafka": run_streamer,
    "quixstreams": run_quixstreams,
}


def main(argv: list[str]) -> None:
    run_child(argv, "streamer.cli.bench_stateful_apps", ChildSettings, RUNNERS)


if __name__ == "__main__":
    main(sys.argv[1:])
