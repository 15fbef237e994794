"""The embedded transport with real components: the log (``memory://`` and a folder), the
group coordinator, the Kafka-protocol server, and aiokafka as another member of a group.

pytest-asyncio is not used: each test runs its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from streamer.log import RecordTooLargeError

from streamer.events import Event, TopicPartition
from streamer.transport.base import TopicSpec
from streamer.transport.embedded import ADDRESS_FILE, EmbeddedTransport, LogInUseError
from streamer.transport.embedded_consumer import EmbeddedConsumer
from streamer.transport.embedded_group import (
    CommitFailedError,
    assign_range,
    assign_roundrobin,
)

T = TypeVar("T")
TIMEOUT_S = 20.0
HEARTBEAT_MS = 100  # in-process heartbeats: rebalances start within a tenth of a second
TOPIC = "events"
PARTITIONS = 4


def run(scenario: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, TIMEOUT_S)

    return asyncio.run(bounded())


@pytest.fixture(params=["memory", "folder"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else str(tmp_path / "data")


def transport_for(url: str, listen: str | None = None) -> EmbeddedTransport:
    return EmbeddedTransport(url, app_id="test", listen=listen,
                             heartbeat_interval_ms=HEARTBEAT_MS)  # fmt: skip


@contextlib.asynccontextmanager
async def started(url: str) -> AsyncIterator[EmbeddedTransport]:
    """A started transport with the test topic, closed afterwards."""
    transport = transport_for(url)
    await transport.start()
    try:
        await transport.ensure_topics([TopicSpec(TOPIC, PARTITIONS)])
        yield transport
    finally:
        await transport.close()


class Recorder:
    """A rebalance listener that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.calls.append(("revoked", partitions))

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self.calls.append(("assigned", partitions))


def tps(*partitions: int, topic: str = TOPIC) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, p) for p in partitions)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S / 2
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def consume(consumer: EmbeddedConsumer, count: int, max_records: int = 500) -> list[Event]:
    events: list[Event] = []
    while len(events) < count:
        for _, batch in await consumer.fetch(200, min(max_records, count - len(events))):
            events.extend(batch)
    return events


def record(i: int) -> tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...], int]:
    """The i-th test record: (partition, key, value, headers, timestamp)."""
    key = None if i % 7 == 0 else f"key-{i}".encode()
    value = None if i % 11 == 0 else b"v" * (i % 300) + str(i).encode()
    headers = () if i % 3 else (("n", str(i).encode()), ("empty", b""))
    return i % PARTITIONS, key, value, headers, 1_700_000_000_000 + i * 3 - (i % 5) * 1000


async def send_records(transport: EmbeddedTransport, first: int, count: int) -> None:
    for i in range(first, first + count):
        partition, key, value, headers, timestamp_ms = record(i)
        await transport.send(TOPIC, partition, key, value, headers, timestamp_ms)
    await transport.flush()


def check_records(events: list[Event], indexes: range) -> None:
    """``events`` are exactly the records ``indexes``, in offset order per partition."""
    by_partition: dict[int, list[Event]] = {}
    for event in events:
        assert event.topic == TOPIC
        by_partition.setdefault(event.partition, []).append(event)
    expected: dict[int, list[int]] = {}
    for i in indexes:
        expected.setdefault(i % PARTITIONS, []).append(i)
    assert sorted(by_partition) == sorted(expected)
    for partition, got in by_partition.items():
        wanted = expected[partition]
        assert len(got) == len(wanted)
        for event, i in zip(got, wanted, strict=True):
            _, key, value, headers, timestamp_ms = record(i)
            assert event.offset == i // PARTITIONS
            assert (event.key, event.value, event.headers, event.timestamp) == (
                key, value, headers, timestamp_ms
            )


# -- topics and the round trip ----------------------------------------------------------


def test_ensure_topics_creates_missing_and_keeps_existing() -> None:
    async def scenario() -> None:
        transport = transport_for("memory://")
        await transport.start()
        try:
            created = await transport.ensure_topics([
                TopicSpec("a", 3), TopicSpec("b"), TopicSpec("c", 2, {"cleanup.policy": "compact"})
            ])  # fmt: skip
            assert created == {"a": 3, "b": 1, "c": 2}
            assert await transport.ensure_topics([TopicSpec("a", 5), TopicSpec("b")]) == {
                "a": 3, "b": 1
            }  # fmt: skip
            assert transport.log.topic("c").config.compact
            assert transport.partition_count("a") == 3
            with pytest.raises(KeyError):
                transport.partition_count("missing")
        finally:
            await transport.close()

    run(scenario())


def test_round_trip_of_10k_records(url: str) -> None:
    async def scenario() -> None:
        async with started(url) as transport:
            await send_records(transport, 0, 10_000)
            listener = Recorder()
            consumer = transport.consumer("g", [TOPIC], listener)
            await consumer.start()
            assert consumer.assignment() == tps(0, 1, 2, 3)
            assert listener.calls == [("assigned", tps(0, 1, 2, 3))]
            events = await consume(consumer, 10_000, max_records=777)
            check_records(events, range(10_000))
            assert await consumer.fetch(0, 100) == []  # nothing more
            await consumer.close()

    run(scenario())


def test_fetch_takes_turns_between_partitions() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            await send_records(transport, 0, 400)
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            firsts = [(await consumer.fetch(0, 10))[0][0].partition for _ in range(PARTITIONS)]
            assert sorted(firsts) == [0, 1, 2, 3]
            await consumer.close()

    run(scenario())


def test_fetch_wakes_on_append() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            began = time.monotonic()
            fetching = asyncio.ensure_future(consumer.fetch(5_000, 10))
            await asyncio.sleep(0.05)
            await send_records(transport, 0, 1)
            (_, events), = await fetching
            assert [e.offset for e in events] == [0]
            assert time.monotonic() - began < 2
            await consumer.close()

    run(scenario())


# -- commits and positions --------------------------------------------------------------


def test_commit_then_a_new_consumer_resumes_there(url: str) -> None:
    async def scenario() -> None:
        async with started(url) as transport:
            await send_records(transport, 0, 400)
            first = transport.consumer("g", [TOPIC], Recorder())
            await first.start()
            await first.commit({TopicPartition(TOPIC, 0): 30, TopicPartition(TOPIC, 2): 90})
            await first.close()

            resumed = transport.consumer("g", [TOPIC], Recorder())
            await resumed.start()
            events = await consume(resumed, 400 - 30 - 90)
            starts = {p: min(e.offset for e in events if e.partition == p) for p in range(4)}
            assert starts == {0: 30, 1: 0, 2: 90, 3: 0}
            await resumed.close()

            latest = transport.consumer("other", [TOPIC], Recorder(), auto_offset_reset="latest")
            await latest.start()
            assert await latest.fetch(0, 100) == []
            await send_records(transport, 400, 4)
            check_records(await consume(latest, 4), range(400, 404))
            await latest.close()

    run(scenario())


def test_data_and_commits_survive_reopening_the_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "data")

    async def write() -> None:
        transport = transport_for(folder)
        await transport.start()
        await transport.ensure_topics([TopicSpec(TOPIC, PARTITIONS)])
        await send_records(transport, 0, 1_000)
        consumer = transport.consumer("g", [TOPIC], Recorder())
        await consumer.start()
        await consume(consumer, 100)
        await consumer.commit({TopicPartition(TOPIC, p): 25 for p in range(PARTITIONS)})
        await consumer.close()
        await transport.close()

    async def read() -> None:
        transport = transport_for(folder)
        await transport.start()
        try:
            assert await transport.ensure_topics([TopicSpec(TOPIC)]) == {TOPIC: PARTITIONS}
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            check_records(await consume(consumer, 900), range(100, 1_000))
            await consumer.close()
        finally:
            await transport.close()

    run(write())
    run(read())


def test_a_position_below_the_log_start_resets_to_it() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            await send_records(transport, 0, 400)
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            transport.log.partition(TOPIC, 1).delete_records(60)  # as retention would
            events = await consume(consumer, 400 - 60)
            assert min(e.offset for e in events if e.partition == 1) == 60
            consumer.seek(TopicPartition(TOPIC, 3), 99)
            (_, again), = await consumer.fetch(0, 10)
            assert [(e.partition, e.offset) for e in again] == [(3, 99)]
            await consumer.close()

    run(scenario())


# -- groups ---------------------------------------------------------------------------------


def test_two_members_split_the_partitions_and_one_takes_over() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            first_listener, second_listener = Recorder(), Recorder()
            first = transport.consumer("g", [TOPIC], first_listener)
            await first.start()
            second = transport.consumer("g", [TOPIC], second_listener)
            await second.start()
            await wait_until(lambda: len(first_listener.calls) == 3, "the first to rejoin")
            mine, theirs = first.assignment(), second.assignment()
            assert len(mine) == len(theirs) == 2
            assert mine | theirs == tps(0, 1, 2, 3)
            assert first_listener.calls == [
                ("assigned", tps(0, 1, 2, 3)), ("revoked", tps(0, 1, 2, 3)), ("assigned", mine)
            ]  # fmt: skip
            assert second_listener.calls == [("assigned", theirs)]

            await second.close()
            await wait_until(lambda: len(first_listener.calls) == 5, "the takeover")
            assert first.assignment() == tps(0, 1, 2, 3)
            assert first_listener.calls[3:] == [("revoked", mine), ("assigned", tps(0, 1, 2, 3))]
            await first.commit({TopicPartition(TOPIC, 0): 1})
            await first.close()

    run(scenario())


def test_the_leader_rebalances_when_partitions_are_added() -> None:
    async def scenario() -> None:
        transport = transport_for("memory://")
        await transport.start()
        try:
            await transport.ensure_topics([TopicSpec(TOPIC, 2)])
            listener = Recorder()
            consumer = transport.consumer("g", [TOPIC, "later"], listener)
            await consumer.start()
            assert consumer.assignment() == tps(0, 1)
            transport.log.create_partitions(TOPIC, 3)
            await transport.ensure_topics([TopicSpec("later", 1)])
            everything = tps(0, 1, 2) | tps(0, topic="later")
            await wait_until(lambda: consumer.assignment() == everything, "a new assignment")
            assert listener.calls[-2:] in (
                [("revoked", tps(0, 1)), ("assigned", everything)],
                [("revoked", tps(0, 1, 2)), ("assigned", everything)],  # two rebalances
            )
            await consumer.close()
        finally:
            await transport.close()

    run(scenario())


def test_a_listener_error_surfaces_from_start_and_fetch() -> None:
    class Failing(Recorder):
        fail = True

        async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
            await super().on_partitions_assigned(partitions)
            if self.fail:
                raise RuntimeError("listener bug")

    async def scenario() -> None:
        async with started("memory://") as transport:
            with pytest.raises(RuntimeError, match="listener bug"):
                await transport.consumer("g", [TOPIC], Failing()).start()
            assert transport.broker.groups.describe_groups(["g"])[0].members == ()

            listener = Failing()
            listener.fail = False
            consumer = transport.consumer("g", [TOPIC], listener)
            await consumer.start()
            listener.fail = True
            other = transport.consumer("g", [TOPIC], Recorder())
            await other.start()  # the first rebalances; its listener raises
            await wait_until(lambda: len(listener.calls) == 3, "the rebalance")
            with pytest.raises(RuntimeError, match="listener bug"):
                await consumer.fetch(0, 10)
            await consumer.fetch(0, 10)  # raised once; the member is still in the group
            assert len(consumer.assignment()) == 2
            await other.close()
            await consumer.close()

    run(scenario())


def test_a_commit_with_a_stale_generation_is_refused() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            consumer._member.generation_id -= 1
            with pytest.raises(CommitFailedError, match="ILLEGAL_GENERATION"):
                await consumer.commit({TopicPartition(TOPIC, 0): 1})
            await consumer.close()

    run(scenario())


def test_an_aiokafka_member_shares_the_group_through_the_server() -> None:
    async def aiokafka_member(port: int) -> AIOKafkaConsumer:
        member = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=f"127.0.0.1:{port}", group_id="g",
            enable_auto_commit=False, auto_offset_reset="earliest",
            heartbeat_interval_ms=HEARTBEAT_MS, session_timeout_ms=6_000,
            metadata_max_age_ms=1_000,
        )  # fmt: skip
        await member.start()
        return member

    async def split(embedded: EmbeddedConsumer, member: AIOKafkaConsumer) -> None:
        def done() -> bool:
            return len(embedded.assignment()) == 2 and len(member.assignment()) == 2

        await wait_until(done, "the group to split the partitions")
        theirs = {TopicPartition(tp.topic, tp.partition) for tp in member.assignment()}
        assert embedded.assignment() | theirs == tps(0, 1, 2, 3)

    async def scenario() -> None:
        transport = transport_for("memory://", listen="127.0.0.1:0")
        await transport.start()
        assert transport.address is not None
        port = transport.address[1]
        try:
            await transport.ensure_topics([TopicSpec(TOPIC, PARTITIONS)])
            await send_records(transport, 0, 400)
            # The embedded member leads and assigns.
            embedded = transport.consumer("g", [TOPIC], Recorder())
            await embedded.start()
            member = await aiokafka_member(port)
            await split(embedded, member)
            records = await member.getmany(timeout_ms=2_000)
            assert {tp.partition for tp in records} <= {tp.partition for tp in member.assignment()}
            await member.stop()
            await wait_until(lambda: embedded.assignment() == tps(0, 1, 2, 3), "the takeover")
            await embedded.close()

            # aiokafka leads: the embedded member takes the assignment it is given.
            member = await aiokafka_member(port)
            await wait_until(lambda: len(member.assignment()) == 4, "aiokafka alone")
            embedded = transport.consumer("g", [TOPIC], Recorder())
            await embedded.start()
            await split(embedded, member)
            await embedded.close()
            await member.stop()
        finally:
            await transport.close()

    run(scenario())


class _Cluster:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(self.counts[topic])) if topic in self.counts else None


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(assign_roundrobin, RoundRobinPartitionAssignor), (assign_range, RangePartitionAssignor)],
)
def test_assignors_agree_with_aiokafka(ours: Callable[..., Any], theirs: Any) -> None:
    rng = random.Random(7)
    for _ in range(200):
        counts = {f"t{i}": rng.randint(1, 9) for i in range(rng.randint(1, 4))}
        subscriptions = {
            f"member-{rng.random():.6f}": rng.sample(sorted(counts), rng.randint(1, len(counts)))
            for _ in range(rng.randint(1, 5))
        }
        metadata = {m: ConsumerProtocolMemberMetadata(0, t, b"") for m, t in subscriptions.items()}
        expected = {
            member: sorted(
                TopicPartition(topic, p) for topic, ps in assignment.assignment for p in ps
            )
            for member, assignment in theirs.assign(_Cluster(counts), metadata).items()
        }
        got = {m: sorted(tps) for m, tps in ours(subscriptions, counts.__getitem__).items()}
        assert got == expected


# -- the folder lock and errors -------------------------------------------------------------


def test_a_second_transport_on_the_folder_gets_the_first_ones_address(tmp_path: Path) -> None:
    folder = str(tmp_path / "data")

    async def scenario() -> None:
        first = transport_for(folder, listen="127.0.0.1:0")
        await first.start()
        try:
            address = json.loads((tmp_path / "data" / ADDRESS_FILE).read_text())
            assert (address["host"], address["port"]) == first.address
            with pytest.raises(LogInUseError) as raised:
                await transport_for(f"file://{folder}").start()
            assert raised.value.address == first.address
            assert raised.value.url == f"kafka://127.0.0.1:{first.address[1]}"
        finally:
            await first.close()
        assert not (tmp_path / "data" / ADDRESS_FILE).exists()

        # Free again. A crashed owner's file is not believed; this one does not listen.
        stale = {"host": "127.0.0.1", "port": 1, "pid": 1, "app_id": "gone"}
        (tmp_path / "data" / ADDRESS_FILE).write_text(json.dumps(stale))
        quiet = transport_for(folder, listen=None)
        await quiet.start()
        try:
            with pytest.raises(LogInUseError) as raised:
                await transport_for(folder).start()
            assert raised.value.address is None and raised.value.url is None
        finally:
            await quiet.close()

    run(scenario())


def test_a_failed_start_releases_the_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "data")

    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError):
                await transport_for(folder, listen=f"127.0.0.1:{port}").start()
        again = transport_for(folder)
        await again.start()
        await again.close()

    run(scenario())


def test_flush_surfaces_a_record_the_log_refuses(url: str) -> None:
    async def scenario() -> None:
        transport = transport_for(url)
        await transport.start()
        try:
            await transport.ensure_topics([TopicSpec(TOPIC, 1, {"max.message.bytes": "1000"})])
            for i in range(20):  # several small batches: the batch bound follows the topic
                await transport.send(TOPIC, 0, None, b"x" * 100, (), i)
            await transport.send(TOPIC, 0, None, b"x" * 2_000, (), 20)
            with pytest.raises(RecordTooLargeError):
                await transport.flush()
            await transport.flush()  # reported once

            await transport.send(TOPIC, 0, None, b"x" * 2_000, (), 21)
            with pytest.raises(RecordTooLargeError):  # writing it to start the next batch
                await transport.send(TOPIC, 0, None, b"y", (), 22)
            with pytest.raises(RecordTooLargeError):
                await transport.flush()
            await transport.send(TOPIC, 0, None, b"z", (), 23)
            await transport.flush()
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            events = await consume(consumer, 21)
            assert [e.timestamp for e in events] == [*range(20), 23]
            await consumer.close()
        finally:
            await transport.close()

    run(scenario())


def test_sends_are_readable_before_flush_after_the_linger() -> None:
    async def scenario() -> None:
        async with started("memory://") as transport:
            consumer = transport.consumer("g", [TOPIC], Recorder())
            await consumer.start()
            await transport.send(TOPIC, 2, b"k", b"v", (), 5)
            (tp, events), = await consumer.fetch(2_000, 10)
            assert tp == TopicPartition(TOPIC, 2) and events[0].value == b"v"
            await consumer.close()

    run(scenario())
