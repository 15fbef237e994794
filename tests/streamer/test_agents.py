"""Agents and stream operators run by a real worker, on both transports: what an agent
sees of each event, sinks, concurrency, and every operator (map, filter, flat_map, group_by
through its repartition topic, take, merge, branch, through, to)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import streamer
from streamer.events import Event
from streamer.partitioner import KeyPartitioner
from tests.streamer.running import Target, run, running


class IntCodec:
    """A codec given directly as a topic's value type."""

    @staticmethod
    def dumps(value: int) -> bytes:
        return str(value).encode()

    @staticmethod
    def loads(data: bytes) -> int:
        return int(data)


def _app(name: str) -> streamer.App:
    return streamer.App(name, listen=None, commit_interval_s=0.2)


def test_an_agent_sees_key_headers_timestamp_offset_and_current_event(target: Target) -> None:
    async def scenario() -> tuple[list[Event], list[tuple[Any, Event | None]]]:
        app = _app("events")
        source = app.topic("readings", value_type=dict, partitions=2)
        whole: list[Event] = []
        values: list[tuple[Any, Event | None]] = []

        @app.agent(source)
        async def by_event(stream: streamer.Stream) -> None:
            async for event in stream.events():
                whole.append(event)

        @app.agent(source)
        async def by_value(stream: streamer.Stream) -> None:
            async for value in stream:
                values.append((value, stream.current_event))

        @app.task
        async def send() -> None:
            for i in range(6):
                await source.send(key=f"k{i}", value={"i": i}, headers={"n": str(i)},
                                  timestamp=1_000 + i, partition=i % 2)

        async with running(app, target) as worker:
            await worker.wait(lambda: len(whole) == 6 and len(values) == 6, "six events, twice")
        return whole, values

    whole, values = run(scenario())
    for event in whole:
        i = event.value["i"]
        assert (event.topic, event.partition, event.offset) == ("readings", i % 2, i // 2)
        assert (event.key, event.timestamp, event.headers) == (f"k{i}", 1_000 + i,
                                                               (("n", str(i).encode()),))
    for value, current in values:
        assert current is not None and current.value == value
        assert current.key == f"k{value['i']}"


def test_yielded_values_go_to_every_sink_keyed_like_their_event(target: Target) -> None:
    async def scenario() -> tuple[list[Event], list[Any]]:
        app = _app("sinks")
        source = app.topic("words", value_type=str, partitions=3)
        shouted = app.topic("shouted", value_type=str, partitions=3)
        called: list[Any] = []
        out: list[Event] = []

        async def remember(value: str) -> None:
            called.append(value)

        @app.agent(source, sink=[shouted, remember, called.append])
        async def shout(stream: streamer.Stream) -> Any:
            async for word in stream:
                yield word.upper()

        @app.agent(shouted)
        async def collect(stream: streamer.Stream) -> None:
            async for event in stream.events():
                out.append(event)

        @app.task
        async def send() -> None:
            for word in ["alpha", "beta", "gamma", "delta"]:
                await source.send(key=word, value=word)

        async with running(app, target) as worker:
            await worker.wait(lambda: len(out) == 4, "four shouted words")
            assert app.agents[0].statistics().events_out == 4
        return out, called

    out, called = run(scenario())
    assert sorted((event.key, event.value) for event in out) == [
        ("alpha", "ALPHA"), ("beta", "BETA"), ("delta", "DELTA"), ("gamma", "GAMMA")]
    assert sorted(called) == sorted(["ALPHA", "BETA", "GAMMA", "DELTA"] * 2)
    partitioner = KeyPartitioner()
    for event in out:
        assert event.partition == partitioner.partition(event.key.encode(), 3)


def test_concurrency_runs_instances_side_by_side_and_keeps_partition_order(
    target: Target,
) -> None:
    """Partition ``p`` goes to instance ``p % concurrency``; both instances hold an event at
    once (the gate opens only then), and each partition's events arrive in offset order."""

    async def scenario() -> list[tuple[str, int, int]]:
        app = _app("concurrency")
        source = app.topic("jobs", value_type=IntCodec, partitions=4)
        seen: list[tuple[str, int, int]] = []
        inside: set[str] = set()
        both_inside = asyncio.Event()

        @app.agent(source, concurrency=2)
        async def work(stream: streamer.Stream) -> None:
            me = asyncio.current_task().get_name()  # type: ignore[union-attr]
            async for event in stream.events():
                inside.add(me)
                if len(inside) == 2:
                    both_inside.set()
                await asyncio.wait_for(both_inside.wait(), 10)
                seen.append((me, event.partition, event.offset))

        @app.task
        async def send() -> None:
            for i in range(40):
                await source.send(value=i, partition=i % 4)

        async with running(app, target) as worker:
            await worker.wait(lambda: len(seen) == 40, "forty jobs")
        return seen

    seen = run(scenario())
    by_partition: dict[int, list[int]] = defaultdict(list)
    for instance, partition, offset in seen:
        assert instance == f"agent work[{partition % 2}]"
        by_partition[partition].append(offset)
    assert {p: offsets for p, offsets in by_partition.items()} == {
        p: list(range(10)) for p in range(4)}


def test_map_filter_flat_map_and_events_after_map(target: Target) -> None:
    async def scenario() -> tuple[list[Any], list[Event]]:
        app = _app("operators")
        numbers = app.topic("numbers", value_type=dict, partitions=1)
        values: list[Any] = []
        mapped_events: list[Event] = []

        async def double(value: int) -> int:
            return value * 2

        @app.agent(numbers)
        async def shape(stream: streamer.Stream) -> None:
            pipeline = (stream.map(lambda v: v["n"]).filter(lambda n: n % 3 != 0)
                        .map(double).flat_map(lambda n: [n, n + 1]))
            async for value in pipeline:
                values.append(value)

        @app.agent(numbers)
        async def labelled(stream: streamer.Stream) -> None:
            async for event in stream.map(lambda v: f"n={v['n']}").events():
                mapped_events.append(event)

        @app.task
        async def send() -> None:
            for n in range(7):
                await numbers.send(key=str(n), value={"n": n})

        async with running(app, target) as worker:
            await worker.wait(lambda: len(values) == 8 and len(mapped_events) == 7,
                              "every shaped value")
        return values, mapped_events

    values, mapped_events = run(scenario())
    assert values == [2, 3, 4, 5, 8, 9, 10, 11]
    assert [(e.key, e.value, e.offset) for e in mapped_events] == [
        (str(n), f"n={n}", n) for n in range(7)]


def test_group_by_repartitions_so_each_key_lives_in_one_partition(target: Target) -> None:
    """Clicks arrive spread round-robin; after ``group_by("user")`` every event of a user comes
    from the same partition of ``<app>-user-repartition``, the one Kafka's partitioner gives
    the user's key, and carries the user as its key."""

    async def scenario() -> list[Event]:
        app = _app("grouping")
        clicks = app.topic("clicks", value_type=dict, partitions=4)
        regrouped: list[Event] = []

        @app.agent(clicks)
        async def per_user(stream: streamer.Stream) -> None:
            async for event in stream.group_by("user", partitions=3).events():
                regrouped.append(event)

        @app.task
        async def send() -> None:
            for i in range(60):
                await clicks.send(value={"user": f"user-{i % 7}", "i": i}, partition=i % 4)

        async with running(app, target) as worker:
            await worker.wait(lambda: len(regrouped) == 60, "sixty regrouped clicks")
            assert app.topics["grouping-user-repartition"].internal
        return regrouped

    regrouped = run(scenario())
    partitioner = KeyPartitioner()
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for event in regrouped:
        assert event.topic == "grouping-user-repartition"
        assert event.key == event.value["user"]
        partitions_of[event.key].add(event.partition)
    assert len(partitions_of) == 7
    for user, partitions in partitions_of.items():
        assert partitions == {partitioner.partition(user.encode(), 3)}, user
    assert sorted(event.value["i"] for event in regrouped) == list(range(60))
    # within a user, order of arrival is kept (a user's clicks all came from one partition
    # of the repartition topic, written in the order they were read per source partition)
    for user in partitions_of:
        offsets = [e.offset for e in regrouped if e.key == user]
        assert offsets == sorted(offsets)


def test_group_by_with_a_function_needs_a_name() -> None:
    app = _app("naming")
    topic = app.topic("t", value_type=dict)
    stream = streamer.Stream(app, topic.stream().source)
    try:
        stream.group_by(lambda v: v["x"])
    except streamer.StreamerError as error:
        assert "name=" in str(error)
    else:
        raise AssertionError("group_by(lambda) without name= was accepted")
    assert stream.group_by(lambda v: v["x"], name="by-x") is not None
    assert "naming-by-x-repartition" in app.topics


def test_take_gives_full_lists_and_a_short_one_once_within_passed(target: Target) -> None:
    async def scenario() -> list[tuple[list[int], float]]:
        app = _app("batching")
        numbers = app.topic("numbers", value_type=dict, partitions=1)
        batches: list[tuple[list[int], float]] = []
        sent_at: list[float] = []

        @app.agent(numbers)
        async def in_fours(stream: streamer.Stream) -> None:
            async for batch in stream.take(4, within=0.5):
                batches.append(([v["n"] for v in batch], time.monotonic()))

        @app.task
        async def send() -> None:
            for n in range(10):
                await numbers.send(value={"n": n})
            await app.worker.checkpoint()  # type: ignore[union-attr]  # flushed: readable now
            sent_at.append(time.monotonic())

        async with running(app, target) as worker:
            await worker.wait(lambda: sum(len(b) for b, _ in batches) == 10, "ten values")
        assert sent_at
        return batches

    batches = run(scenario())
    assert [values for values, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # The short list waited for `within` after its first value (which came with the others).
    assert batches[2][1] - batches[1][1] >= 0.4


def test_merge_reads_several_topics_in_one_stream(target: Target) -> None:
    async def scenario() -> list[tuple[str, Any]]:
        app = _app("merging")
        left = app.topic("left", value_type=str, partitions=2)
        right = app.topic("right", value_type=str, partitions=1)
        extra = app.topic("extra", value_type=str, partitions=1)
        seen: list[tuple[str, Any]] = []

        @app.agent(left)
        async def both(stream: streamer.Stream) -> None:
            async for event in stream.merge(right.stream(), extra.stream()).events():
                seen.append((event.topic, event.value))

        @app.task
        async def send() -> None:
            for i in range(5):
                await left.send(value=f"l{i}")
                await right.send(value=f"r{i}")
            await extra.send(value="x")

        async with running(app, target) as worker:
            await worker.wait(lambda: len(seen) == 11, "eleven merged events")
        return seen

    seen = run(scenario())
    assert sorted(seen) == sorted(
        [("left", f"l{i}") for i in range(5)] + [("right", f"r{i}") for i in range(5)]
        + [("extra", "x")])


def test_branch_sends_each_value_to_the_first_matching_branch(target: Target) -> None:
    async def scenario() -> dict[str, list[Any]]:
        app = _app("branching")
        numbers = app.topic("numbers", value_type=dict, partitions=2)
        got: dict[str, list[Any]] = {"small": [], "even": [], "rest": []}

        @app.agent(numbers)
        async def split(stream: streamer.Stream) -> None:
            small, even, rest = stream.map(lambda v: v["n"]).branch(
                lambda n: n < 3, lambda n: n % 2 == 0)

            async def drain(branch: streamer.Stream, label: str) -> None:
                async for value in branch:
                    got[label].append(value)

            await asyncio.gather(drain(small, "small"), drain(even, "even"),
                                 drain(rest, "rest"))

        @app.task
        async def send() -> None:
            for n in range(10):
                await numbers.send(value={"n": n})

        async with running(app, target) as worker:
            await worker.wait(lambda: sum(map(len, got.values())) == 10, "ten values")
        return got

    got = run(scenario())
    assert sorted(got["small"]) == [0, 1, 2]
    assert sorted(got["even"]) == [4, 6, 8]
    assert sorted(got["rest"]) == [3, 5, 7, 9]


def test_through_continues_from_the_other_topic_and_to_writes_every_value(
    target: Target,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        app = _app("piping")
        raw = app.topic("raw", value_type=str, partitions=2)
        cleaned = app.topic("cleaned", value_type=str, partitions=2)
        final = app.topic("final", value_type=str, partitions=2)
        after_through: list[Event] = []
        in_final: list[Event] = []

        @app.agent(raw)
        async def clean(stream: streamer.Stream) -> None:
            async for event in stream.map(str.strip).through(cleaned).events():
                after_through.append(event)

        @app.agent(cleaned)
        async def finish(stream: streamer.Stream) -> None:
            await stream.map(lambda text: f"<{text}>").to(final)

        @app.agent(final)
        async def collect(stream: streamer.Stream) -> None:
            async for event in stream.events():
                in_final.append(event)

        @app.task
        async def send() -> None:
            for i in range(6):
                await raw.send(key=f"k{i}", value=f"  v{i}  ", headers={"i": str(i)})

        async with running(app, target) as worker:
            await worker.wait(lambda: len(after_through) == 6 and len(in_final) == 6,
                              "six values through and six in final")
        return after_through, in_final

    after_through, in_final = run(scenario())
    assert sorted((e.topic, e.key, e.value) for e in after_through) == [
        ("cleaned", f"k{i}", f"v{i}") for i in range(6)]
    assert sorted((e.key, e.value, e.headers) for e in in_final) == [
        (f"k{i}", f"<v{i}>", (("i", str(i).encode()),)) for i in range(6)]


def test_instances_share_a_regrouped_topic_without_duplicates(target: Target) -> None:
    """With ``concurrency=2`` each instance reads its own partitions of the repartition
    topic (and of a merged topic), as with the agent's own topic: each event once."""

    async def scenario() -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
        app = _app("sharing-instances")
        clicks = app.topic("clicks", value_type=dict, partitions=4)
        extra = app.topic("extra", value_type=str, partitions=4)
        regrouped: list[tuple[str, int, int]] = []
        merged: list[tuple[str, str]] = []

        @app.agent(clicks, concurrency=2)
        async def per_user(stream: streamer.Stream) -> None:
            me = asyncio.current_task().get_name()  # type: ignore[union-attr]
            async for event in stream.group_by("user", partitions=4).events():
                regrouped.append((me, event.partition, event.value["i"]))

        @app.agent(extra, concurrency=2)
        async def both(stream: streamer.Stream) -> None:
            me = asyncio.current_task().get_name()  # type: ignore[union-attr]
            async for value in stream.merge(app.topics["clicks"].stream()):
                merged.append((me, value if isinstance(value, str) else str(value["i"])))

        @app.task
        async def send() -> None:
            for i in range(40):
                await clicks.send(value={"user": f"user-{i % 9}", "i": i}, partition=i % 4)
                await extra.send(value=f"x{i}", partition=i % 4)

        async with running(app, target) as worker:
            await worker.wait(lambda: len(regrouped) >= 40 and len(merged) >= 80,
                              "every event")
            await asyncio.sleep(0.3)  # duplicates would arrive by now
        return regrouped, merged

    regrouped, merged = run(scenario())
    assert sorted(i for _, _, i in regrouped) == list(range(40))
    for instance, partition, _ in regrouped:
        assert instance == f"agent per_user[{partition % 2}]"
    assert len(merged) == 80
    assert sorted(value for _, value in merged) == sorted(
        [f"x{i}" for i in range(40)] + [str(i) for i in range(40)])
    assert {instance for instance, _ in merged} == {"agent both[0]", "agent both[1]"}


def test_events_after_map_do_not_change_what_other_agents_see(target: Target) -> None:
    """Two agents read one topic; one maps values and iterates events: the other still gets
    the values as decoded from the topic."""

    async def scenario() -> tuple[list[Any], list[Any]]:
        app = _app("sharing-events")
        numbers = app.topic("numbers", value_type=dict, partitions=1)
        mapped: list[Any] = []
        plain: list[Any] = []

        @app.agent(numbers)
        async def scaled(stream: streamer.Stream) -> None:
            async for event in stream.map(lambda v: v["n"] * 100).events():
                mapped.append(event.value)
                assert stream.current_event is not None
                assert stream.current_event.value == {"n": event.value // 100}

        @app.agent(numbers)
        async def untouched(stream: streamer.Stream) -> None:
            async for value in stream:
                await asyncio.sleep(0)  # let the other agent run first
                plain.append(value)

        @app.task
        async def send() -> None:
            for n in range(5):
                await numbers.send(value={"n": n})

        async with running(app, target) as worker:
            await worker.wait(lambda: len(mapped) == 5 and len(plain) == 5, "both agents")
        return mapped, plain

    mapped, plain = run(scenario())
    assert mapped == [0, 100, 200, 300, 400]
    assert plain == [{"n": n} for n in range(5)]
