"""Stream-stream joins in a running app: ``stream.join``, ``interval_join`` and ``asof_join``
give, per event, exactly what the relational models of tests/operators/test_stream_joins.py
expect (AppRunner: events sent one at a time, so the order they are processed in is the order
sent); unmatched rows come out only once their window closed, or when a partition idles; a
join survives a restart on both transports; sides read through ``group_by`` and ``map`` work;
a join of topics with different partition counts stops ``streamer worker``."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamer
from streamer.partitioner import KeyPartitioner
from streamer.testing import AppRunner
from streamer.transport import TopicSpec, open_transport
from tests.operators.test_stream_joins import Step, asof_oracle, steps, window_oracle
from tests.streamer.running import Target, WorkerProcess, read_topic, run, running, wait_until

PARTITIONS = 3
EXAMPLES = settings(max_examples=12, deadline=None)
FAR_AHEAD_S = 10_000.0  # an idle advance past every window
Row = tuple[Any, Any, Any, int]

_partitioner = KeyPartitioner()


def _partition(key: str, partitions: int = PARTITIONS) -> int:
    return _partitioner.partition(key.encode(), partitions)


def _join_app(kind: str, options: dict[str, Any], seen: list[Row]
              ) -> tuple[streamer.App, streamer.Topic, streamer.Topic]:
    app = streamer.App("joins", broker="memory://")
    lefts = app.topic("lefts", value_type=int, partitions=PARTITIONS)
    rights = app.topic("rights", value_type=int, partitions=PARTITIONS)

    @app.agent(lefts)
    async def join(stream: streamer.Stream) -> None:
        other = rights.stream()
        if kind == "join":
            joined = stream.join(other, **options)
        elif kind == "interval":
            joined = stream.interval_join(other, **options)
        else:
            joined = stream.asof_join(other, **options)
        async for left, right in joined:
            event = joined.current_event
            assert event is not None
            seen.append((event.key, left, right, event.timestamp))

    return app, lefts, rights


@st.composite
def joins(draw: st.DrawFn) -> tuple[str, dict[str, Any], Any]:
    """A join and its options, and the model of each partition: steps → rows per step."""
    kind = draw(st.sampled_from(["join", "interval", "asof"]))
    if kind == "asof":
        grace_ms, how = draw(st.integers(0, 100)), draw(st.sampled_from(["inner", "left"]))
        return kind, {"grace": grace_ms / 1000, "how": how, "max_wait_s": 0}, (
            lambda part: asof_oracle(part, grace_ms, how))
    grace_ms = draw(st.integers(0, 40))
    how = draw(st.sampled_from(["inner", "left", "outer"]))
    before_ms, after_ms = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    # max_wait_s=0: events come one at a time, never held for the other side
    options: dict[str, Any] = {"grace": grace_ms / 1000, "how": how, "idle_timeout_s": 1.0,
                               "max_wait_s": 0}
    if kind == "join":
        options |= {"before": before_ms / 1000, "after": after_ms / 1000}
    else:
        before_ms, after_ms = -min(before_ms, after_ms), max(before_ms, after_ms)
        options |= {"lower": -before_ms / 1000, "upper": after_ms / 1000}
    return kind, options, (
        lambda part: window_oracle(part, before_ms, after_ms, grace_ms, how))


@EXAMPLES
@given(join=joins(), run_steps=steps(max_steps=30, tombstones=False))
def test_joins_in_a_worker_match_the_model(join: tuple[str, dict[str, Any], Any],
                                           run_steps: list[Step]) -> None:
    kind, options, model = join
    events = [s for s in run_steps if s.side is not None]
    seen: list[Row] = []
    app, lefts, rights = _join_app(kind, options, seen)

    async def scenario() -> tuple[list[Counter[Row]], Counter[Row]]:
        per_event = []
        async with AppRunner(app) as runner:
            for step in events:
                before = len(seen)
                topic = lefts if step.side == "left" else rights
                await runner.send(topic, key=step.key, value=step.value,
                                  timestamp=step.timestamp_ms)
                await runner.wait_idle()
                per_event.append(Counter(seen[before:]))
            before = len(seen)
            if kind != "asof":  # idle partitions: their stream time moves far ahead
                await runner.advance(FAR_AHEAD_S)
                await asyncio.sleep(0.5)  # the idle check runs every 0.25 s (1 s / 4)
                await runner.wait_idle()
            return per_event, Counter(seen[before:])

    per_event, final = run(scenario())
    expected_final: Counter[Row] = Counter()
    for partition in range(PARTITIONS):
        part = [s for s in events if _partition(s.key) == partition]
        rows = model(part)
        positions = [i for i, s in enumerate(events) if _partition(s.key) == partition]
        for position, expected in zip(positions, rows, strict=False):
            assert per_event[position] == expected, (position, events[position])
        if kind != "asof":
            expected_final += rows[-1]
    assert final == expected_final


def _one_partition_app(seen: list[Row], **options: Any
                       ) -> tuple[streamer.App, streamer.Topic, streamer.Topic]:
    app = streamer.App("join-timing", broker="memory://")
    lefts = app.topic("lefts", value_type=str, partitions=1)
    rights = app.topic("rights", value_type=str, partitions=1)

    @app.agent(lefts)
    async def join(stream: streamer.Stream) -> None:
        joined = stream.join(rights.stream(), **options)
        async for left, right in joined:
            event = joined.current_event
            assert event is not None
            seen.append((event.key, left, right, event.timestamp))

    return app, lefts, rights


def test_an_unmatched_event_comes_out_only_once_its_window_closed() -> None:
    seen: list[Row] = []
    app, lefts, rights = _one_partition_app(seen, within=10, grace=5, how="outer",
                                            idle_timeout_s=None, max_wait_s=0)

    async def scenario() -> list[list[Row]]:
        snapshots = []
        async with AppRunner(app) as runner:
            for topic, key, value, at_s in [
                (lefts, "order-1", "o1", 100), (rights, "order-2", "p2", 104),
                (rights, "other", "x", 115), (rights, "other", "y", 119),
                (rights, "other", "z", 120),
            ]:
                await runner.send(topic, key=key, value=value, timestamp=at_s * 1000)
                await runner.wait_idle()
                snapshots.append(list(seen))
        return snapshots

    snapshots = run(scenario())
    # Stream time 115 s = 100 + within + grace: order-1's window is still open.
    assert snapshots[:3] == [[], [], []]
    # 119 s passes it; order-2 (at 104) closes at 119 + 0.001: only at 120 does it come out.
    assert snapshots[3] == [("order-1", "o1", None, 100_000)]
    assert snapshots[4] == [("order-1", "o1", None, 100_000), ("order-2", None, "p2", 104_000)]


@pytest.mark.parametrize("concurrency", [1, PARTITIONS])
def test_an_instance_joining_several_partitions_warns_how_to_split_it(
    concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    """One instance reads its partitions batch after batch, so with a backlog a side can
    run ahead of the other past the grace: the join says so once, with the fix."""
    app = streamer.App("joins", broker="memory://")
    lefts = app.topic("lefts", value_type=int, partitions=PARTITIONS)
    rights = app.topic("rights", value_type=int, partitions=PARTITIONS)
    seen: list[Any] = []

    @app.agent(lefts, concurrency=concurrency)
    async def join(stream: streamer.Stream) -> None:
        async for pair in stream.join(rights.stream(), within=1, idle_timeout_s=None):
            seen.append(pair)

    keys = [next(f"k{n}" for n in range(100) if _partition(f"k{n}") == p)
            for p in range(PARTITIONS)]

    async def scenario() -> None:
        async with AppRunner(app) as runner:
            for n, key in enumerate(keys):
                await runner.send(lefts, key=key, value=n, timestamp=1_000)
                await runner.send(rights, key=key, value=-n, timestamp=1_000)
            await runner.wait_idle()

    with caplog.at_level(logging.WARNING, logger="streamer.joins"):
        run(scenario())
    assert sorted(seen) == [(n, -n) for n in range(PARTITIONS)]
    warnings = [r.getMessage() for r in caplog.records if "in one instance" in r.getMessage()]
    if concurrency == 1:
        assert len(warnings) == 1, warnings
        assert "agent 'join' reads partitions 0, 1" in warnings[0]
        assert "concurrency=<partitions>" in warnings[0]
    else:
        assert warnings == []


def test_an_idle_partition_closes_its_windows_by_wall_time() -> None:
    seen: list[Row] = []
    app, lefts, _ = _one_partition_app(seen, within=5, how="left", idle_timeout_s=1.0)

    async def scenario() -> tuple[list[Row], list[Row]]:
        async with AppRunner(app) as runner:
            now_ms = runner.clock.time_ms()
            await runner.send(lefts, key="k", value="lonely", timestamp=now_ms)
            await runner.wait_idle()
            await asyncio.sleep(0.5)  # real time passes; the worker's clock does not
            before = list(seen)
            await runner.advance(7)  # past the window (5 s) and the idle timeout (1 s)
            await wait_until(lambda: seen, "the unmatched row after the idle timeout")
            return before, list(seen)

    before, after = run(scenario())
    assert before == []
    assert [(key, left, right) for key, left, right, _ in after] == [("k", "lonely", None)]


@pytest.mark.parametrize("max_wait_s", [2.0, 0.0])
def test_a_side_that_runs_ahead_waits_for_the_other(max_wait_s: float) -> None:
    """Ten orders come first, their payments 0.2 s later (as when one topic's backlog is
    fetched before the other's): the orders wait for the payments, so every pair comes out;
    without waiting (max_wait_s=0) stream time runs ahead and the payments are late."""
    seen: list[Row] = []
    app, lefts, rights = _one_partition_app(seen, within=1, grace=1, max_wait_s=max_wait_s,
                                            idle_timeout_s=None)

    async def scenario() -> int:
        async with AppRunner(app) as runner:
            for n in range(10):
                await runner.send(lefts, key=f"o{n}", value="order", timestamp=n * 10_000)
            await asyncio.sleep(0.2)
            for n in range(10):
                await runner.send(rights, key=f"o{n}", value="paid",
                                  timestamp=n * 10_000 + 500)
            await runner.wait_idle()
            return app.tables["lefts-rights-join-1000ms-1000ms"].late_events

    late = run(scenario())
    if max_wait_s:
        assert (len(seen), late) == (10, 0)
    else:
        assert len(seen) < 10 and late == 10 - len(seen)


def test_sides_read_through_group_by_and_map() -> None:
    seen: list[Row] = []
    app = streamer.App("join-rekeyed", broker="memory://")
    clicks = app.topic("clicks", value_type=dict, partitions=2)
    users = app.topic("users", value_type=dict, partitions=2)

    @app.agent(clicks)
    async def join(stream: streamer.Stream) -> None:
        by_user = stream.group_by(lambda click: click["user"], name="clicks-by-user")
        names = users.stream().map(lambda user: user["name"])
        joined = by_user.join(names, within=60, joiner=lambda click, name: (click["page"], name))
        async for page, name in joined:
            event = joined.current_event
            assert event is not None
            seen.append((event.key, page, name, event.timestamp))

    async def scenario() -> None:
        async with AppRunner(app) as runner:
            await runner.send(users, key="u1", value={"name": "Ada"}, timestamp=1_000)
            await runner.send(clicks, key="any", value={"user": "u1", "page": "/"},
                              timestamp=2_000)
            await runner.send(clicks, key="other", value={"user": "u2", "page": "/x"},
                              timestamp=3_000)
            await runner.wait_idle()

    run(scenario())
    assert seen == [("u1", "/", "Ada", 2_000)]


@pytest.mark.parametrize(("call", "message"), [
    (lambda s, o: s.join(o), "give within="),
    (lambda s, o: s.join(o, within=1, how="full"), 'how is one of "inner", "left", "outer"'),
    (lambda s, o: s.join(o, within=-1), "is empty"),
    (lambda s, o: s.join(o, within=1, grace=-1), "grace must be ≥ 0"),
    (lambda s, o: s.join(o, within="1"), "before is a number of seconds"),
    (lambda s, o: s.interval_join(o, lower=2, upper=1), "lower (2 s) must be ≤ upper (1 s)"),
    (lambda s, o: s.asof_join(o, how="outer"), 'how is one of "inner", "left"'),
    (lambda s, o: s.join(o, within=1, idle_timeout_s=0), "idle_timeout_s must be > 0"),
    (lambda s, o: s.join(s.merge(o), within=1), "each side must read one topic"),
])
def test_a_join_that_cannot_work_is_refused_with_what_to_pass(call: Any, message: str) -> None:
    app = streamer.App("join-errors", broker="memory://")
    lefts = app.topic("lefts", value_type=str)
    rights = app.topic("rights", value_type=str)
    raised: list[BaseException] = []

    @app.agent(lefts)
    async def join(stream: streamer.Stream) -> None:
        try:
            call(stream, rights.stream())
        except streamer.StreamerError as error:
            raised.append(error)

    async def scenario() -> None:
        async with AppRunner(app):
            pass

    run(scenario())
    assert len(raised) == 1 and message in str(raised[0]), raised


# -- both transports, and a restart -------------------------------------------------------------


def _restart_events() -> list[tuple[str, str, int, int]]:
    """(side, key, value, time ms): keys with events every 200 ms, each left event with a
    right one up to 40 ms away (or none, or one too far), so rows do not depend on the order
    the two topics are read in (the grace, 2 s, covers the whole input)."""
    chosen = random.Random(7)
    start_ms = int(time.time() * 1000)  # older records would be deleted by the retention
    events = []
    for slot in range(8):
        for number, key in enumerate("abcde"):
            at_ms = start_ms + slot * 200 + chosen.randrange(10)
            value = slot * 10 + number
            events.append(("left", key, value, at_ms))
            fate = chosen.random()
            if fate < 0.7:
                events.append(("right", key, 1_000 + value, at_ms + chosen.randrange(-40, 40)))
            elif fate < 0.85:
                events.append(("right", key, 2_000 + value, at_ms + 90))
    return events


def _restart_app(tmp_path: Path, rows_seen: list[Any]) -> streamer.App:
    app = streamer.App("join-restart", state_dir=str(tmp_path / "state"), commit_interval_s=0.1)
    lefts = app.topic("restart-lefts", value_type=int, partitions=2)
    rights = app.topic("restart-rights", value_type=int, partitions=2)
    out = app.topic("restart-joined", value_type=dict, partitions=2)

    @app.agent(lefts)
    async def join(stream: streamer.Stream) -> None:
        joined = stream.join(rights.stream(), within=0.05, grace=2, how="outer",
                             idle_timeout_s=0.5, joiner=lambda left, right: {"l": left, "r": right})
        async for row in joined:
            event = joined.current_event
            assert event is not None
            await out.send(key=event.key, value=row, timestamp=event.timestamp)
            rows_seen.append(row)

    return app


async def _produce(url: str, events: list[tuple[str, str, int, int]]) -> None:
    transport = open_transport(url, app_id="join-producer", listen=None)
    await transport.start()
    try:
        await transport.ensure_topics([TopicSpec("restart-lefts", 2),
                                       TopicSpec("restart-rights", 2)])
        for side, key, value, at_ms in events:
            await transport.send(f"restart-{side}s", _partition(key, 2), key.encode(),
                                 str(value).encode(), (), at_ms)
        await transport.flush()
    finally:
        await transport.close()


def test_a_join_restarted_mid_input_equals_the_model(target: Target, tmp_path: Path) -> None:
    events = _restart_events()
    # The first run stops between a left event and its partner: the pair needs the state.
    half = next(i for i in range(len(events) // 2, len(events))
                if events[i - 1][0] == "left" and events[i][0] == "right")
    steps_ = [Step(side, key, value, at_ms, i) for i, (side, key, value, at_ms)
              in enumerate(events)]
    expected: Counter[tuple[Any, Any]] = Counter()
    for rows in window_oracle(steps_, 50, 50, 2_000, "outer"):
        expected += Counter((left, right) for _, left, right, _ in rows)
    rows_seen: list[Any] = []

    async def scenario() -> list[Any]:
        await _produce(target.url, events[:half])
        first = _restart_app(tmp_path, rows_seen)
        async with running(first, target) as worker:
            await worker.wait(lambda: _processed(first) >= half, f"{half} events joined")
        await _produce(target.url, events[half:])
        second = _restart_app(tmp_path, rows_seen)
        async with running(second, target) as worker:
            await worker.wait(lambda: Counter(_pairs(rows_seen)) == expected,
                              "every row of the model")
            if target.embedded:  # the worker owns the folder: read through what it serves
                address = second.worker.transport.address  # type: ignore[union-attr]
                url = f"kafka://{address[0]}:{address[1]}"
            else:
                url = target.url
            return await read_topic(url, "restart-joined", at_least=sum(expected.values()))

    read = run(scenario())
    assert Counter(_pairs(json.loads(e.value) for e in read)) == expected


def _pairs(rows: Any) -> list[tuple[Any, Any]]:
    return [(row["l"], row["r"]) for row in rows]


def _processed(app: streamer.App) -> int:
    worker = app.worker
    return sum(worker.processed_offsets().values()) if worker is not None else 0


# -- co-partitioning ----------------------------------------------------------------------------


def test_a_join_of_topics_partitioned_differently_stops_the_worker(tmp_path: Path) -> None:
    worker = WorkerProcess("tests.streamer.apps.stream_joiner:app", str(tmp_path / "log"),
                           env={"JOINER_RIGHT_PARTITIONS": "3",
                                "JOINER_STATE": str(tmp_path / "state")})
    code = worker.process.wait(60)
    worker.kill()
    last = worker.output.strip().splitlines()[-1]
    assert code == 1, worker.output
    assert last == (
        "Error: join of joiner-left with joiner-right: inputs are not co-partitioned (topic "
        "'joiner-left' has 4, topic 'joiner-right' has 3 partitions). Repartition topic "
        "'joiner-right' to 4 partitions first, e.g. stream.group_by(key, partitions=4) or a "
        "table declared with partitions=4; or make the table global (app.global_table)."
    ), worker.output
