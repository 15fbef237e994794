"""Worker snapshots: what a running worker reports (partitions with lag, agents with counts
and processing times, events), how it publishes them to ``__streamer_workers`` and how a
reader gets them back (a last one saying "stopped"); error folding, percentiles, JSON, the
table adapter, the Prometheus rendering; on both transports where a log is involved."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types
from collections import deque
from typing import Any

import pytest

import streamer
from streamer import statistics_log
from streamer.app import RecentError
from streamer.events import Event, TopicPartition
from streamer.inbox import BatchAck, Inbox, OffsetTracker
from streamer.statistics import (
    SCHEMA_VERSION,
    EventSnapshot,
    JoinSnapshot,
    SnapshotFormatError,
    WorkerSnapshot,
    fold_errors,
    from_json,
    percentiles,
    to_json,
)
from streamer.statistics_log import STATISTICS_TOPIC
from streamer.statistics_worker import describe_partitions
from streamer.transport.embedded import EmbeddedTransport
from tests.cli.top_frames import worker_snapshot
from tests.streamer.running import Target, produce, run, running
from tests.streamer.snapshots import read_snapshots

PARTITIONS = 4
EVENTS = 400
HELD = 201  # the agent waits at this number until released (partition 1, offset 50)


@pytest.fixture
def fast_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics_log, "PUBLISH_INTERVAL_S", 0.1)


def _app(release: asyncio.Event, seen: list[int]) -> streamer.App:
    app = streamer.App("watched", listen="127.0.0.1:0", commit_interval_s=0.05)
    numbers = app.topic("numbers", value_type=str, partitions=PARTITIONS)

    @app.agent(numbers)
    async def record(stream: streamer.Stream) -> None:
        async for value in stream:
            if int(value) == HELD:
                await release.wait()
            seen.append(int(value))

    return app


async def _read_back_after_stop(target: Target) -> dict[str, WorkerSnapshot]:
    if not target.embedded:
        return await read_snapshots(target.url.removeprefix("kafka://"))
    transport = EmbeddedTransport(target.url, app_id="reader", listen="127.0.0.1:0")
    await transport.start()  # the worker is gone: serve its folder to read it
    try:
        assert transport.address is not None
        return await read_snapshots("{}:{}".format(*transport.address))
    finally:
        await transport.close()


def _bootstrap(app: streamer.App, target: Target) -> str:
    if not target.embedded:
        return target.url.removeprefix("kafka://")
    assert app.worker is not None
    address = getattr(app.worker.transport, "address", None)
    assert address is not None
    return "{}:{}".format(*address)


@pytest.mark.usefixtures("fast_publisher")
def test_a_worker_publishes_snapshots_and_a_last_one_when_it_stops(target: Target) -> None:
    async def scenario() -> tuple[WorkerSnapshot, WorkerSnapshot, WorkerSnapshot, dict[str, Any]]:
        await produce(target.url, "numbers",
                      ((None, str(n).encode()) for n in range(EVENTS)),
                      partitions=PARTITIONS, partition_of=lambda n: n % PARTITIONS)
        release, seen = asyncio.Event(), []
        app = _app(release, seen)
        async with running(app, target) as handle:
            worker = app.worker
            assert worker is not None

            def lagging() -> bool:
                latest = worker.activity.latest
                return latest is not None and sum(p.lag or 0 for p in latest.partitions) > 0

            await handle.wait(lagging, "a snapshot with lag")
            held = worker.activity.latest
            assert held is not None
            bootstrap = _bootstrap(app, target)
            published: dict[str, WorkerSnapshot] = {}
            for _ in range(100):  # sent is not yet written (a batch lingers): read again
                published = await read_snapshots(bootstrap)
                if held.worker in published:
                    break
                await asyncio.sleep(0.05)
            release.set()

            def caught_up() -> bool:
                latest = worker.activity.latest
                return latest is not None and latest.agents[0].events_in == EVENTS and all(
                    p.lag == 0 and p.committed_offset == p.end_offset
                    for p in latest.partitions) and latest.agents[0].processing_ms_p99 is not None

            await handle.wait(caught_up, "a snapshot without lag")
            done = worker.activity.latest
            assert done is not None
        after = await _read_back_after_stop(target)
        return held, done, published[held.worker], after

    held, done, published, after = run(scenario())
    assert held.app == "watched" and held.state == "running" and held.rebalances == 1
    assert [(p.topic, p.partition) for p in held.partitions] == [
        ("numbers", n) for n in range(PARTITIONS)]
    assert all(p.end_offset == EVENTS // PARTITIONS for p in held.partitions)
    blocked = held.partitions[HELD % PARTITIONS]
    assert blocked.lag is not None and blocked.lag > 0
    assert all(p.lag == p.end_offset - (p.processed_offset or p.committed_offset or 0)
               for p in held.partitions)
    assert any(e.kind == "rebalance" and "numbers[0-3]" in e.text for e in held.events)
    assert published.worker == held.worker and published.state == "running"
    agent = done.agents[0]
    assert (agent.name, agent.topic, agent.events_in, agent.errors) == ("record", "numbers",
                                                                        EVENTS, 0)
    assert agent.processing_ms_p50 is not None and agent.processing_ms_p99 is not None
    assert agent.processing_ms_p50 <= agent.processing_ms_p99
    last = after[held.worker]
    assert last.state == "stopped"
    assert last.at_ms >= done.at_ms


def test_snapshots_round_trip_through_json() -> None:
    snap = worker_snapshot()
    assert from_json(to_json(snap)) == snap
    document = to_json(snap).replace(b'"schema":1', b'"schema":1,"added_later":[1,2]')
    assert from_json(document) == snap  # a newer worker may add fields
    with pytest.raises(SnapshotFormatError, match="schema"):
        from_json(to_json(snap).replace(b'"schema":1', b'"schema":99'))
    with pytest.raises(SnapshotFormatError, match="not JSON"):
        from_json(b"{")
    with pytest.raises(SnapshotFormatError, match="expected int"):
        from_json(to_json(snap).replace(b'"pid":4101', b'"pid":"x"'))
    assert SCHEMA_VERSION == 1


def test_repeated_errors_fold_with_a_count_in_order_of_their_last_occurrence() -> None:
    errors = [
        RecentError("enrich", "KeyError: 'sku'", "orders[0] offset 5", 1_000),
        RecentError("enrich", "KeyError: 'sku'", "orders[1] offset 9", 2_000),
        RecentError("report", "TimeoutError: ", "", 2_500),
        RecentError("enrich", "KeyError: 'sku'", "orders[0] offset 7", 3_000),
        RecentError("enrich", "KeyError: 'price'", "orders[2] offset 1", 3_500),
    ]
    assert fold_errors(errors) == [
        EventSnapshot(2_500, "error", "report", "TimeoutError: ", "", 1),
        EventSnapshot(3_000, "error", "enrich", "KeyError: 'sku'", "orders[0] offset 7", 3),
        EventSnapshot(3_500, "error", "enrich", "KeyError: 'price'", "orders[2] offset 1", 1),
    ]
    assert fold_errors([]) == []


def test_percentiles_weigh_each_batch_by_its_events() -> None:
    # (seconds per event, events): one slow batch of 1 event among fast batches of 99
    samples = [(0.001, 99), (0.5, 1)]
    assert percentiles(samples, (0.5, 0.99, 1.0)) == [0.001, 0.001, 0.5]
    assert percentiles([(0.001, 98), (0.5, 2)], (0.99,)) == [0.5]
    assert percentiles([], (0.5,)) == [None]


def test_partitions_are_described_with_runs_folded() -> None:
    tps = [TopicPartition("views", n) for n in (3, 0, 1, 2, 7)] + [TopicPartition("a", 1)]
    assert describe_partitions(tps) == "a[1] views[0-3,7]"
    assert describe_partitions([TopicPartition("v", 0), TopicPartition("v", 1)]) == "v[0,1]"


def test_reading_processed_offsets_leaves_them_to_the_next_checkpoint() -> None:
    tracker = OffsetTracker()
    tp = TopicPartition("t", 0)
    ack = BatchAck(tp, 10, 1)
    tracker.track(ack)
    ack.done()
    assert tracker.processed() == {tp: 10}  # statistics look ...
    assert tracker.committable() == {tp: 10}  # ... and the checkpoint still commits it
    assert tracker.committable() == {}
    assert tracker.processed() == {tp: 10}


def test_an_inbox_times_each_batch_once() -> None:
    async def scenario() -> list[tuple[float, int]]:
        inbox = Inbox("i")
        for size in (3, 2):
            inbox.put_nowait([Event("t", 0, n, 0, None, b"") for n in range(size)], None)
        await inbox.next_batch()
        await asyncio.sleep(0.01)  # "processing" the three events
        inbox.index = 3
        await inbox.next_batch()
        inbox.index = 2
        waiting = asyncio.ensure_future(inbox.next_batch())  # nothing queued: it waits
        await asyncio.sleep(0)
        waiting.cancel()
        return list(inbox.batch_timings)

    timings = run(scenario())
    assert [count for _, count in timings] == [3, 2]
    assert timings[0][0] >= 0.01 / 3


@dataclasses.dataclass(frozen=True)
class _TablePartition:
    partition: int
    keys: int
    bytes_on_disk: int
    changelog_offset: int
    changelog_end_offset: int
    recovering: bool
    recovered_records: int
    to_recover: int
    role: str = "active"


@dataclasses.dataclass(frozen=True)
class _TableStatistics:
    name: str
    partitions: tuple[_TablePartition, ...]


def test_tables_are_read_from_whatever_statistics_they_return() -> None:
    from streamer.statistics_worker import _tables

    part = _TablePartition(2, 10, 4096, 90, 100, True, 40, 60)
    standby = _TablePartition(3, 7, 1024, 5, -1, False, 0, 0, role="standby")
    as_sequence = types.SimpleNamespace(
        statistics=lambda: _TableStatistics("totals", (part, standby)))
    as_mapping = types.SimpleNamespace(statistics=lambda: {"partitions": {2: part}})
    broken = types.SimpleNamespace(statistics=lambda: 1 / 0)
    app = types.SimpleNamespace(tables={"totals": as_sequence, "windows": as_mapping,
                                        "broken": broken, "plain": object()})
    found = {t.name: t for t in _tables(app)}
    assert set(found) == {"totals", "windows"}
    table = found["totals"]
    assert (table.keys, table.bytes_on_disk, table.changelog_lag, table.recovering,
            table.recovery) == (10, 4096, 10, True, (40, 60))
    assert table.partitions[1].role == "standby" and table.partitions[1].changelog_end_offset \
        is None  # -1: unknown
    assert found["windows"].partitions == table.partitions[:1]
    assert _tables(types.SimpleNamespace()) == ()


def test_prometheus_renders_the_snapshot() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from streamer.metrics import SnapshotCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(worker_snapshot))
    text = generate_latest(registry).decode()
    app, worker = 'app="orders-app"', 'worker="orders-app@host-a:4101"'
    for line in (
        f'streamer_partition_lag{{{app},partition="1",topic="orders",{worker}}} 4383.0',
        f'streamer_agent_events_in_total{{agent="enrich",{app},{worker}}} 9001.0',
        f'streamer_agent_errors_total{{agent="enrich",{app},{worker}}} 17.0',
        f'streamer_agent_processing_seconds{{agent="enrich",{app},quantile="0.99",{worker}}} 0.088',
        f'streamer_worker_info{{{app},host="host-a",state="running",{worker}}} 1.0',
        f'streamer_table_changelog_lag{{{app},partition="1",table="order_totals",{worker}}} 120.0',
    ):
        assert line in text.splitlines(), line
    joined = CollectorRegistry(auto_describe=False)
    joined.register(SnapshotCollector(lambda: dataclasses.replace(
        worker_snapshot(), guarantee="exactly_once", transactions=12, aborted_transactions=1,
        joins=(JoinSnapshot("a-b-join", "window", "left", 2, 100, 7, 3, 90),
               JoinSnapshot("t-join-u", "table", "inner", 2, rows=40)))))
    lines = generate_latest(joined).decode().splitlines()
    join = 'join="a-b-join",kind="window"'
    for line in (
        f'streamer_worker_transactions_total{{{app},{worker}}} 12.0',
        f'streamer_worker_transactions_aborted_total{{{app},{worker}}} 1.0',
        f'streamer_join_buffered_events{{{app},{join},{worker}}} 7.0',
        f'streamer_join_late_events_total{{{app},{join},{worker}}} 3.0',
        f'streamer_join_rows{{{app},join="t-join-u",kind="table",{worker}}} 40.0',
    ):
        assert line in lines, line
    empty = CollectorRegistry(auto_describe=False)
    empty.register(SnapshotCollector(lambda: None))
    assert b"streamer_" not in generate_latest(empty)


def test_metrics_without_prometheus_client_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.metrics import MetricsUnavailableError, serve_metrics

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MetricsUnavailableError, match=r"pip install 'streamer\[metrics\]'"):
        serve_metrics(streamer.App("x"), 0)


def test_worker_events_are_bounded() -> None:
    from streamer.statistics_worker import WORKER_EVENTS_MAX, WorkerActivity

    activity = WorkerActivity("bounded")
    for n in range(WORKER_EVENTS_MAX * 2):
        activity.assigned([TopicPartition("t", n)])
    assert isinstance(activity.events, deque) and len(activity.events) == WORKER_EVENTS_MAX
    assert activity.rebalances == WORKER_EVENTS_MAX * 2
    assert STATISTICS_TOPIC == "__streamer_workers"


def test_a_worker_with_a_table_reports_its_keys() -> None:
    from streamer.testing import AppRunner

    app = streamer.App("tabled")
    words = app.topic("words", value_type=str, partitions=2)
    counts = app.table("counts", default=int, partitions=2)

    @app.agent(words)
    async def count(stream: streamer.Stream) -> None:
        async for word in stream:
            counts[word] += 1

    async def scenario() -> WorkerSnapshot:
        async with AppRunner(app) as runner:
            for word in ("a", "b", "c", "a"):
                await runner.send(words, key=word, value=word)
            await runner.wait_idle()
            return runner.worker.statistics()

    snap = run(scenario())
    (table,) = snap.tables
    assert table.name == "counts" and table.keys == 3 and not table.recovering
    assert sorted(p.partition for p in table.partitions) == [0, 1]


def test_a_worker_with_joins_reports_them() -> None:
    """A windowed join's events in, held, late and rows out, and a table join's rows, in the
    worker's snapshot (and through JSON)."""
    from streamer.testing import AppRunner

    app = streamer.App("joined")
    lefts = app.topic("lefts", value_type=int, partitions=1)
    rights = app.topic("rights", value_type=int, partitions=1)
    accounts = app.table("accounts", source=app.topic("account-rows", value_type=int,
                                                         partitions=1))
    limits = app.table("limits", source=app.topic("limit-rows", value_type=int,
                                                     partitions=1))
    accounts.join(limits, how="outer", name="accounts-join-limits")

    @app.agent(lefts)
    async def join(stream: streamer.Stream) -> None:
        async for _ in stream.join(rights.stream(), within=1, idle_timeout_s=None,
                                   max_wait_s=0):
            pass

    @app.agent(rights)
    async def look_up(stream: streamer.Stream) -> None:
        async for _ in stream.join(accounts, how="inner"):
            pass

    async def scenario() -> WorkerSnapshot:
        async with AppRunner(app) as runner:
            for topic, key, value, at_ms in ((lefts, "k", 1, 10_000), (rights, "k", 2, 10_500),
                                             (lefts, "j", 3, 20_000), (rights, "k", 4, 1_000)):
                await runner.send(topic, key=key, value=value, timestamp=at_ms)
            for key in ("a", "b"):
                await runner.send(app.topics["account-rows"], key=key, value=1)
            await runner.send(app.topics["limit-rows"], key="c", value=9)
            await runner.wait_idle()
            return runner.worker.statistics()

    snap = from_json(to_json(run(scenario())))
    found = {j.name: j for j in snap.joins}
    window = found["lefts-rights-join-1000ms-1000ms"]
    assert (window.kind, window.how, window.partitions) == ("window", "inner", 1)
    # 4 events: one pair (k at 10 s and 10.5 s, whose windows closed when j at 20 s came),
    # j held, and the right one at 1 s late
    assert (window.events, window.buffered, window.late_events, window.rows) == (4, 1, 1, 1)
    table = found["accounts-join-limits"]
    assert (table.kind, table.how, table.rows) == ("table", "outer", 3)
    lookups = found["rights-join-accounts"]  # two rights, keyed k: no account k
    assert (lookups.kind, lookups.how, lookups.events, lookups.rows) == (
        "stream-table", "inner", 2, 0)
    assert snap.guarantee == "at_least_once" and snap.transactions == 0
