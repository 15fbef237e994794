"""The worker's at-least-once contract, on both transports: offsets are committed only after
the events below them were processed; a stopped worker commits what it did; a restart resumes
at the committed offsets, so only uncommitted work is seen twice; two workers of one app
split the partitions and hand them over without losing events."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

import streamer
from streamer.events import TopicPartition
from streamer.transport.embedded import EmbeddedTransport
from tests.streamer.running import Target, committed_offsets, produce, run, running

PARTITIONS = 4


def _numbers_app(
    app_id: str, seen: list[int], *, listen: str | None = None, paced: bool = False,
    **settings: Any,
) -> streamer.App:
    """An app recording the numbers it reads; ``paced``: at most 1000 a second, so a test can
    watch work being shared."""
    app = streamer.App(app_id, listen=listen, **settings)
    numbers = app.topic("numbers", value_type=str, partitions=PARTITIONS)

    @app.agent(numbers)
    async def record(stream: streamer.Stream) -> None:
        async for value in stream:
            seen.append(int(value))
            if paced and len(seen) % 5 == 0:
                await asyncio.sleep(0.005)

    return app


async def _produce_numbers(url: str, numbers: range) -> None:
    await produce(url, "numbers", ((None, str(n).encode()) for n in numbers),
                  partitions=PARTITIONS, partition_of=lambda i: numbers[i] % PARTITIONS)


async def _committed_while_running(app: streamer.App, topic: str, partitions: int) -> list[int]:
    worker = app.worker
    assert worker is not None and worker.transport is not None
    transport = worker.transport
    if isinstance(transport, EmbeddedTransport):
        fetched = transport.broker.groups.fetch_offsets(
            app.id, [TopicPartition(topic, p) for p in range(partitions)])
        by_partition = {c.partition: c.offset for c in fetched.partitions}
        return [by_partition.get(p, -1) for p in range(partitions)]
    bootstrap = worker.broker_url
    return await committed_offsets(bootstrap, app.id, topic, partitions)


def test_a_clean_stop_commits_and_a_restart_resumes_there(target: Target) -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        await _produce_numbers(target.url, range(0, 200))
        first: list[int] = []
        async with running(_numbers_app("resuming", first), target) as worker:
            await worker.wait(lambda: len(first) >= 200, "the first 200 numbers")
        committed = await committed_offsets(target.url, "resuming", "numbers", PARTITIONS)
        await _produce_numbers(target.url, range(200, 300))
        second: list[int] = []
        async with running(_numbers_app("resuming", second), target) as worker:
            await worker.wait(lambda: len(second) >= 100, "the next 100 numbers")
            await asyncio.sleep(0.3)  # a replay of old events would show up by now
        return first, committed, second

    first, committed, second = run(scenario())
    assert sorted(first) == list(range(200))
    assert committed == [50] * PARTITIONS
    assert sorted(second) == list(range(200, 300))


def test_only_uncommitted_work_is_seen_again_after_a_failure(target: Target) -> None:
    """The worker dies (an agent raises) mid-stream with part of its work committed: the
    restart reads from the committed offsets, so every number is processed, and the only
    repeats are numbers processed after the last commit."""

    async def scenario() -> tuple[list[int], list[int], list[int], list[int]]:
        await _produce_numbers(target.url, range(400))
        first: list[int] = []
        app = streamer.App("crashing", listen=None, commit_every=20, commit_interval_s=0.05)
        numbers = app.topic("numbers", value_type=str, partitions=PARTITIONS)

        @app.agent(numbers)
        async def record(stream: streamer.Stream) -> None:
            async for value in stream:
                if int(value) == 301:
                    raise RuntimeError("crash")
                first.append(int(value))
                await asyncio.sleep(0.001)  # slow enough for checkpoints in between

        with pytest.raises(streamer.AgentError):
            await asyncio.wait_for(app.run(broker=target.url), 30)
        committed = await committed_offsets(target.url, "crashing", "numbers", PARTITIONS)
        second: list[int] = []
        async with running(_numbers_app("crashing", second), target) as worker:
            expected = 400 - sum(max(c, 0) for c in committed)
            await worker.wait(lambda: len(second) >= expected, f"{expected} numbers")
            await asyncio.sleep(0.3)
        return first, committed, second, [301]

    first, committed, second, _ = run(scenario())
    assert 301 not in first
    assert set(first) | set(second) == set(range(400)), "lost numbers"
    # The restart began exactly at the committed offsets (number n is at offset n // 4).
    for partition, offset in enumerate(committed):
        resumed = sorted(n for n in second if n % PARTITIONS == partition)
        assert resumed == list(range(max(offset, 0) * PARTITIONS + partition, 400, PARTITIONS))
    assert sum(max(c, 0) for c in committed) > 0, "nothing was committed before the failure"
    assert Counter(second)[301] == 1
    duplicates = set(first) & set(second)
    assert all(n // PARTITIONS >= committed[n % PARTITIONS] for n in duplicates)


def test_offsets_are_committed_only_after_processing(target: Target) -> None:
    """An agent holds event 5 of a partition: checkpoints come and go, but the committed offset
    stays at or below 5 until the agent lets go; then it reaches the end."""

    async def scenario() -> tuple[list[int], list[int], int]:
        app = streamer.App("holding", listen=None, commit_interval_s=0.05)
        jobs = app.topic("jobs", value_type=str, partitions=1)
        release = asyncio.Event()
        seen: list[int] = []

        @app.agent(jobs)
        async def slow(stream: streamer.Stream) -> None:
            async for value in stream:
                if int(value) == 5:
                    await release.wait()
                seen.append(int(value))

        @app.task
        async def feed() -> None:
            for n in range(10):
                await jobs.send(value=str(n))

        async with running(app, target) as worker:
            await worker.wait(lambda: len(seen) == 5, "the first five jobs")
            running_worker = app.worker
            assert running_worker is not None
            await worker.wait(lambda: running_worker.statistics().events_in == 10,
                              "all ten delivered")
            await asyncio.sleep(0.3)  # several checkpoints while event 5 is held
            held = await _committed_while_running(app, "jobs", 1)
            release.set()
            await worker.wait(lambda: len(seen) == 10, "the rest")
            after: list[int] = []

            async def committed_to_end() -> bool:
                after[:] = await _committed_while_running(app, "jobs", 1)
                return after == [10]

            for _ in range(100):
                if await committed_to_end():
                    break
                await asyncio.sleep(0.05)
        return held, after, len(seen)

    held, after, count = run(scenario())
    assert held[0] <= 5, held
    assert after == [10] and count == 10


def test_a_second_worker_takes_a_share_and_gives_it_back(target: Target) -> None:
    """A second worker joins (partitions move to it once the first committed them), then
    leaves (they move back): every number is processed at least once, by one or the other.
    On the embedded log the first worker owns the folder and serves it on loopback; the
    second finds the folder in use and joins over the Kafka protocol."""

    async def scenario() -> tuple[list[int], list[int], set[TopicPartition]]:
        await _produce_numbers(target.url, range(3_000))
        first: list[int] = []
        second: list[int] = []
        one = _numbers_app("sharing", first, listen="127.0.0.1:0", paced=True,
                           commit_interval_s=0.1)
        two = _numbers_app("sharing", second, paced=True, commit_interval_s=0.1)
        async with running(one, target) as worker_one:
            await worker_one.wait(lambda: len(first) > 100, "the first worker under way")
            async with running(two, target) as worker_two:
                await worker_two.wait(lambda: len(second) > 100, "the second worker's share")
                assert two.worker is not None
                split = set(two.worker.statistics().assigned)
            await worker_one.wait(lambda: len(set(first) | set(second)) == 3_000,
                                  "every number", timeout_s=30)
        return first, second, split

    first, second, split = run(scenario())
    assert set(first) | set(second) == set(range(3_000))
    taken = {tp.partition for tp in split if tp.topic == "numbers"}
    assert taken and len(taken) < PARTITIONS, split
    assert {n % PARTITIONS for n in second} <= taken


def test_app_id_is_checked() -> None:
    with pytest.raises(streamer.StreamerError, match="app id"):
        streamer.App("no spaces")
    assert streamer.App("fine.name_1-2").id == "fine.name_1-2"
