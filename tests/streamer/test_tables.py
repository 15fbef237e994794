"""Tables on both transports: counts kept in RocksDB (or memory), written to the changelog at
checkpoints, restored by a restarted worker, shared between two workers; a table updated
from a stream partitioned another way is an error that says what to do."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from streamer.state import TableError

import streamer
from streamer.partitioner import KeyPartitioner
from streamer.testing import AppRunner
from tests.streamer.running import Target, produce, read_topic, run, running

PARTITIONS = 4
KEYS = [f"k{i}" for i in range(40)]


def _count_app(
    app_id: str, state_dir: Path, *, paced: bool = False,
    processed: list[tuple[int, int, str]] | None = None, **table: Any,
) -> tuple[streamer.App, Any]:
    app = streamer.App(app_id, state_dir=str(state_dir), commit_interval_s=0.2)
    words = app.topic("words", value_type=str, partitions=PARTITIONS)
    counts = app.table("counts", default=int, partitions=PARTITIONS, **table)

    @app.agent(words)
    async def count(stream: streamer.Stream) -> None:
        seen = 0
        async for word in stream:
            counts[word] += 1
            if processed is not None:
                event = stream.current_event
                assert event is not None
                processed.append((event.partition, event.offset, word))
            seen += 1
            if paced and seen % 5 == 0:
                await asyncio.sleep(0.005)

    return app, counts


async def _produce_words(url: str, words: list[str]) -> None:
    partitioner = KeyPartitioner()
    await produce(url, "words", ((w.encode(), w.encode()) for w in words), partitions=PARTITIONS,
                  partition_of=lambda i: partitioner.partition(words[i].encode(), PARTITIONS))


def _words(n: int) -> list[str]:
    return [KEYS[(i * 7) % len(KEYS)] for i in range(n)]


def test_counts_survive_a_restart_through_the_store_and_changelog(
    target: Target, tmp_path: Path
) -> None:
    words = _words(2_000)

    async def scenario() -> tuple[dict[str, int], dict[str, int], Any]:
        await _produce_words(target.url, words[:1_000])
        app, counts = _count_app("tables-restart", tmp_path / "state")
        async with running(app, target) as worker:
            await worker.wait(lambda: sum(counts.values()) == 1_000, "the counts")
            first = counts.as_dict()
        await _produce_words(target.url, words[1_000:])
        app, counts = _count_app("tables-restart", tmp_path / "state")
        async with running(app, target) as worker:
            await worker.wait(lambda: sum(counts.values()) == 2_000, "the counts")
            stats = counts.statistics()
            second = counts.as_dict()
        return first, second, stats

    first, second, stats = run(scenario())
    assert first == dict(Counter(words[:1_000]))
    assert second == dict(Counter(words))
    assert {p.partition for p in stats.partitions} == set(range(PARTITIONS))
    assert all(p.store == "rocksdb" and p.role == "active" for p in stats.partitions)
    assert (tmp_path / "state" / "worker-0" / "counts").is_dir()


def test_the_changelog_holds_the_latest_value_of_each_key(target: Target, tmp_path: Path) -> None:
    words = _words(500)

    async def scenario() -> list[Any]:
        await _produce_words(target.url, words)
        app, counts = _count_app("tables-changelog", tmp_path / "state")
        async with running(app, target) as worker:
            await worker.wait(lambda: sum(counts.values()) == 500, "the counts")
        return await read_topic(target.url, "tables-changelog-counts-changelog",
                                at_least=len(set(words)))

    records = run(scenario())
    latest = {r.key: int(r.value) for r in records}
    assert latest == {w.encode(): n for w, n in Counter(words).items()}


def test_a_memory_store_is_restored_from_the_changelog_alone(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    words = _words(800)

    async def scenario() -> dict[str, int]:
        await _produce_words(url, words[:400])
        app, counts = _count_app("tables-memory", tmp_path / "state", store="memory")
        async with running(app, url) as worker:
            await worker.wait(lambda: sum(counts.values()) == 400, "the counts")
        await _produce_words(url, words[400:])
        app, counts = _count_app("tables-memory", tmp_path / "state", store="memory")
        async with running(app, url) as worker:
            await worker.wait(lambda: sum(counts.values()) == 800, "the counts")
            return counts.as_dict()

    assert run(scenario()) == dict(Counter(words))


def test_two_workers_split_a_table_and_hand_it_back(target: Target, tmp_path: Path) -> None:
    """At least once: a key may count an event twice only when that event was processed
    twice (by the worker that lost its partition mid-event, then by the next owner)."""
    words = _words(4_000)
    processed: list[tuple[int, int, str]] = []

    async def scenario() -> tuple[dict[str, int], set[int], set[int]]:
        await _produce_words(target.url, words)
        one, counts_one = _count_app("tables-shared", tmp_path / "state", paced=True,
                                     processed=processed)
        two, counts_two = _count_app("tables-shared", tmp_path / "state", paced=True,
                                     processed=processed)
        async with running(one, target) as first:
            async with running(two, target) as second:
                await second.wait(lambda: bool(counts_one.active and counts_two.active),
                                  "both workers holding partitions", timeout_s=30)
                held_one, held_two = set(counts_one.active), set(counts_two.active)
            await first.wait(lambda: set(counts_one.active) == set(range(PARTITIONS))
                             and len({(p, o) for p, o, _ in processed}) == 4_000,
                             "every event processed", timeout_s=60)
            await first.wait(lambda: sum(counts_one.values()) >= 4_000, "the counts")
            return counts_one.as_dict(), held_one, held_two

    final, held_one, held_two = run(scenario(), timeout_s=120)
    assert held_one and held_two and not held_one & held_two
    assert held_one | held_two == set(range(PARTITIONS))
    expected = Counter(words)
    times = Counter((p, o) for p, o, _ in processed)
    twice = Counter(word for (p, o, word) in set(processed) if times[(p, o)] > 1)
    for word, count in final.items():
        assert expected[word] <= count <= expected[word] + twice[word], (word, count, twice)
    assert set(final) == set(expected)


def test_updating_from_a_stream_keyed_otherwise_says_to_group_by() -> None:
    app = streamer.App("tables-wrong-key", broker="memory://")
    views = app.topic("views", value_type=dict, partitions=4)
    per_page = app.table("per-page", default=int, partitions=4)

    @app.agent(views)
    async def count(stream: streamer.Stream) -> None:
        async for view in stream:
            per_page[view["page"]] += 1

    async def scenario() -> None:
        async with AppRunner(app) as runner:
            for user in range(20):
                await runner.send(views, key=f"user-{user}", value={"page": "/home"})
            await runner.wait_idle()

    with pytest.raises(Exception, match="group_by") as caught:
        run(scenario())
    assert isinstance(caught.value.__cause__, TableError)


def test_reads_outside_an_agent_find_the_key_by_its_partition() -> None:
    app = streamer.App("tables-outside", broker="memory://")
    words = app.topic("words", value_type=str, partitions=PARTITIONS)
    counts = app.table("counts", default=int, partitions=PARTITIONS)

    @app.agent(words)
    async def count(stream: streamer.Stream) -> None:
        async for word in stream:
            counts[word] += 1

    async def scenario() -> tuple[int, int, bool]:
        async with AppRunner(app) as runner:
            for word in ["a", "b", "a"]:
                await runner.send(words, key=word, value=word)
            await runner.wait_idle()
            counts["c"] = 5
            return counts["a"], counts["c"], "zzz" in counts

    assert run(scenario()) == (2, 5, False)


def test_bad_declarations_are_refused() -> None:
    app = streamer.App("tables-bad", broker="memory://")
    with pytest.raises(streamer.StreamerError, match="store"):
        app.table("t", store="redis")  # type: ignore[arg-type]
    with pytest.raises(streamer.StreamerError, match="callable"):
        app.table("t", default=0)  # type: ignore[arg-type]
    app.table("t")
    with pytest.raises(streamer.StreamerError, match="twice"):
        app.table("t")
    asyncio.run(asyncio.sleep(0))


def test_a_global_table_is_whole_on_every_worker(tmp_path: Path) -> None:
    url = str(tmp_path / "log")

    def app() -> tuple[streamer.App, Any]:
        application = streamer.App("tables-global", state_dir=str(tmp_path / "state"),
                                   commit_interval_s=0.1)
        prices = application.topic("prices", value_type=str, partitions=PARTITIONS)
        table = application.global_table("latest", partitions=PARTITIONS)

        @application.agent(prices)
        async def keep(stream: streamer.Stream) -> None:
            async for event in stream.events():
                table[event.key] = event.value

        return application, table

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        partitioner = KeyPartitioner()
        keys = [f"p{i}" for i in range(30)]
        await produce(url, "prices", ((k.encode(), f"{k}-v".encode()) for k in keys),
                      partitions=PARTITIONS,
                      partition_of=lambda i: partitioner.partition(keys[i].encode(),
                                                                   PARTITIONS))
        one, table_one = app()
        two, table_two = app()
        async with running(one, url) as first, running(two, url):
            await first.wait(lambda: len(table_one.as_dict()) == 30 and
                             len(table_two.as_dict()) == 30, "both workers holding all keys")
            return table_one.as_dict(), table_two.as_dict()

    first, second = run(scenario(), timeout_s=90)
    assert first == second == {f"p{i}": f"p{i}-v" for i in range(30)}


def test_a_standby_replica_is_warm_when_it_takes_over(tmp_path: Path) -> None:
    """With standby_replicas=1, the worker that takes partitions back from a stopped one
    finds their stores already up to date: nothing left to restore."""
    url = str(tmp_path / "log")
    words = _words(2_000)

    async def scenario() -> tuple[dict[str, int], Any]:
        await _produce_words(url, words)
        one, counts_one = _count_app("tables-standby", tmp_path / "state", paced=True,
                                     standby_replicas=1)
        two, counts_two = _count_app("tables-standby", tmp_path / "state", paced=True,
                                     standby_replicas=1)
        async with running(one, url) as first:
            async with running(two, url) as second:
                await second.wait(lambda: bool(counts_two.active and counts_one.standby),
                                  "worker one keeping standbys", timeout_s=30)
                await second.wait(lambda: sum(counts_one.values()) + sum(counts_two.values())
                                  >= 2_000, "every count", timeout_s=60)
                standby = sorted(counts_one.standby)
            await first.wait(lambda: set(counts_one.active) == set(range(PARTITIONS)),
                             "worker one taking everything back")
            stats = counts_one.statistics()
            return counts_one.as_dict(), (standby, stats)

    final, (standby, stats) = run(scenario(), timeout_s=120)
    assert standby and sum(final.values()) >= 2_000
    taken_back = [p for p in stats.partitions if p.partition in standby]
    # The standby stores had applied the changelog: the takeover replayed (almost) nothing.
    assert all(p.to_recover <= 50 for p in taken_back), taken_back


def test_group_by_keeps_the_topics_partition_count_for_a_table() -> None:
    app = streamer.App("tables-group-by", broker="memory://")
    views = app.topic("views", value_type=dict, partitions=4)
    per_page = app.table("per-page", default=int, partitions=4)

    @app.agent(views)
    async def count(stream: streamer.Stream) -> None:
        async for view in stream.group_by("page"):
            per_page[view["page"]] += 1

    async def scenario() -> dict[str, int]:
        async with AppRunner(app) as runner:
            for user in range(40):
                await runner.send(views, key=f"user-{user}", value={"page": f"/p{user % 8}"})
            await runner.wait_idle()
            return per_page.as_dict()

    assert run(scenario()) == {f"/p{i}": 5 for i in range(8)}
