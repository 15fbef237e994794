"""Windowed aggregations in a running app (memory:// worker, AppRunner): the chain
``stream.window(...).<aggregate>().current()/.final()`` gives, per partition, exactly what
the brute-force oracle of tests/operators expects for random streams (out of order, late,
idle jumps); windows close on an idle partition; state survives a restart of the worker on
a durable log."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.operators import Result, WindowDefinition, aggregates, tumbling

import streamer
from streamer.partitioner import KeyPartitioner
from streamer.testing import AppRunner
from tests.operators.oracle import Event as OracleEvent
from tests.operators.oracle import expected_outputs
from tests.operators.strategies import AGGREGATES, definitions, streams
from tests.operators.test_oracle import oracle_close_ms, oracle_states
from tests.streamer.running import produce, run, running

PARTITIONS = 3
EXAMPLES = settings(max_examples=25, deadline=None)


def _window_app(
    definition: WindowDefinition, aggregate_name: str, emit: str, seen: list[Result], **kw: Any
) -> tuple[streamer.App, Any]:
    app = streamer.App("windows", broker="memory://")
    events = app.topic("events", value_type=int, partitions=PARTITIONS)

    @app.agent(events)
    async def aggregate(stream: streamer.Stream) -> None:
        windowed = stream.window(definition, name="agg", idle_timeout_s=None, **kw)
        chain = windowed.aggregate_with(AGGREGATES[aggregate_name]())
        chain = chain.final() if emit == "final" else chain.current()
        async for result in chain:
            seen.append(result)

    return app, events


def _expected(definition: WindowDefinition, aggregate_name: str, emit: str,
              events: list[OracleEvent]) -> dict[int, list[Result]]:
    partitioner = KeyPartitioner()
    by_partition: dict[int, list[OracleEvent]] = defaultdict(list)
    for event in events:
        by_partition[partitioner.partition(event.key.encode(), PARTITIONS)].append(event)
    expected = {}
    for partition, ordered in by_partition.items():
        states, _ = oracle_states(definition, ordered)
        outputs = expected_outputs(ordered, states,
                                   lambda end: oracle_close_ms(definition, end),
                                   AGGREGATES[aggregate_name](), emit)
        expected[partition] = [r for output in outputs[:-1] for r in output]
    return expected


@EXAMPLES
@given(kind=st.sampled_from(["tumbling", "hopping", "sliding", "session"]),
       data=st.data(), emit=st.sampled_from(["current", "final"]),
       aggregate_name=st.sampled_from(sorted(AGGREGATES)))
def test_the_chain_in_a_worker_matches_the_oracle(
    kind: str, data: st.DataObject, emit: str, aggregate_name: str
) -> None:
    definition = data.draw(definitions(kind))
    events = data.draw(streams(max_events=40))
    seen: list[Result] = []
    app, topic = _window_app(definition, aggregate_name, emit, seen)

    async def scenario() -> None:
        async with AppRunner(app) as runner:
            for event in events:
                await runner.send(topic, key=event.key, value=event.value,
                                  timestamp=event.timestamp_ms)
            await runner.wait_idle()

    run(scenario())
    partitioner = KeyPartitioner()
    got: dict[int, list[Result]] = defaultdict(list)
    for result in seen:
        got[partitioner.partition(result.key.encode(), PARTITIONS)].append(result)
    expected = _expected(definition, aggregate_name, emit, events)
    assert {p: r for p, r in got.items() if r} == {p: r for p, r in expected.items() if r}


def test_an_idle_partition_still_closes_its_last_window() -> None:
    app = streamer.App("idle", broker="memory://")
    clicks = app.topic("clicks", value_type=str, partitions=1)
    out = app.topic("per-10s", value_type=dict)
    finals: list[Result] = []

    @app.agent(clicks)
    async def per_page(stream: streamer.Stream) -> None:
        async for result in stream.window(tumbling(10), idle_timeout_s=1.0).count().final():
            finals.append(result)
            await out.send(key=result.key, value={"count": result.value})

    async def scenario() -> tuple[list[Result], list[Result], list[Any]]:
        async with AppRunner(app) as runner:
            start = runner.clock.time_ms() // 10_000 * 10_000
            for offset_ms in (1_000, 2_000, 3_000):
                await runner.send(clicks, key="/home", value="x", timestamp=start + offset_ms)
            await runner.wait_idle()
            before = list(finals)
            await runner.advance(12)  # wall time passes; no event comes
            for _ in range(200):
                if finals:
                    break
                await _sleep(0.02)
            await runner.wait_idle()
            return before, list(finals), [e.value for e in runner.sent(out)]

    before, after, sent = run(scenario())
    assert before == []
    assert [(r.key, r.value, r.final) for r in after] == [("/home", 3, True)]
    assert sent == [{"count": 3}]


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def test_window_state_survives_a_restart(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    finals: list[Result] = []

    def app() -> streamer.App:
        application = streamer.App("restart-windows", state_dir=str(tmp_path / "state"),
                                   commit_interval_s=0.1)
        clicks = application.topic("clicks", value_type=str, partitions=2)

        @application.agent(clicks)
        async def per_page(stream: streamer.Stream) -> None:
            windows = stream.window(tumbling(10), idle_timeout_s=None).count().final()
            async for result in windows:
                finals.append(result)

        return application

    async def send(times_s: list[int]) -> None:
        partitioner = KeyPartitioner()
        records = [(b"/home", b"x") for _ in times_s]
        await produce(url, "clicks", records, partitions=2,
                      partition_of=lambda i: partitioner.partition(b"/home", 2))
        del records

    async def scenario() -> list[Result]:
        # First run: 5 clicks in [0, 10 s); the window is still open when it stops.
        await _produce_at(url, [1, 2, 3, 4, 5])
        first = app()
        async with running(first, url) as worker:
            await worker.wait(lambda: _consumed(first) >= 5, "5 clicks")
        # Second run: 2 more in the window, then one at 12 s closes it: 7 in all.
        await _produce_at(url, [6, 7, 12])
        second = app()
        async with running(second, url) as worker:
            await worker.wait(lambda: bool(finals), "the final count")
        return finals

    assert [(r.key, r.start_ms, r.value) for r in run(scenario())] == [("/home", 0, 7)]


def test_a_restored_window_closes_when_no_event_ever_comes_again(tmp_path: Path) -> None:
    """The idle clock of a partition restored with an open window starts at the restore, so
    the window still closes (and comes out once) although the partition never gets another
    event."""
    url = str(tmp_path / "log")
    finals: list[Result] = []

    def app(idle_timeout_s: float | None) -> streamer.App:
        application = streamer.App("restored-idle", state_dir=str(tmp_path / "state"),
                                   commit_interval_s=0.1)
        clicks = application.topic("clicks", value_type=str, partitions=2)

        @application.agent(clicks, concurrency=2)
        async def per_page(stream: streamer.Stream) -> None:
            windows = stream.window(tumbling(10), idle_timeout_s=idle_timeout_s).count()
            async for result in windows.final():
                finals.append(result)

        return application

    async def scenario() -> list[Result]:
        await _produce_at(url, [1, 2, 3, 4, 5])
        first = app(None)
        async with running(first, url) as worker:
            await worker.wait(lambda: _consumed(first) >= 5, "5 clicks")
        assert finals == []
        second = app(0.3)
        async with running(second, url) as worker:
            await worker.wait(lambda: bool(finals), "the final count, by idleness")
            await asyncio.sleep(0.5)  # a second instance closing it again would show now
        return finals

    assert [(r.key, r.start_ms, r.value) for r in run(scenario())] == [("/home", 0, 5)]


def _consumed(app: streamer.App) -> int:
    worker = app.worker
    return sum(worker.processed_offsets().values()) if worker is not None else 0


async def _produce_at(url: str, seconds: list[int]) -> None:
    from streamer.transport import TopicSpec, open_transport

    partition = KeyPartitioner().partition(b"/home", 2)
    transport = open_transport(url, app_id="producer", listen=None)
    await transport.start()
    try:
        await transport.ensure_topics([TopicSpec("clicks", 2)])
        for second in seconds:
            await transport.send("clicks", partition, b"/home", b"x", (), second * 1000)
        await transport.flush()
    finally:
        await transport.close()


def test_aggregates_by_name() -> None:
    assert aggregates.count().name == "count"
