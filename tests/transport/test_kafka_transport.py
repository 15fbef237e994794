"""KafkaTransport against a real ``streamer broker`` subprocess.

pytest-asyncio is not used: each test runs its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamer.events import Event, Headers, TopicPartition
from streamer.transport.base import TopicSpec, TransportConsumer
from streamer.transport.kafka import (
    BrokerUnreachableError,
    DeliveryError,
    KafkaTransport,
    TopicSetupError,
    TransportError,
)
from streamer.transport.kafka_producer import UNACKED_BATCHES_MAX
from tests.broker_process import BrokerProcess

T = TypeVar("T")
TIMEOUT_S = 30.0


def run(scenario: Awaitable[T]) -> T:
    """Run one scenario on a fresh event loop; a hang fails the test instead of the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario, TIMEOUT_S)

    return asyncio.run(bounded())


@asynccontextmanager
async def started(bootstrap: str, client_id: str = "test") -> AsyncIterator[KafkaTransport]:
    transport = KafkaTransport(bootstrap, client_id=client_id)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


class Recorder:
    """A rebalance listener that records its calls (and can act inside them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, frozenset[TopicPartition]]] = []
        self.on_revoke: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.calls.append(("revoked", partitions))
        if self.on_revoke is not None:
            await self.on_revoke(partitions)

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self.calls.append(("assigned", partitions))


async def read(
    consumer: TransportConsumer, count: int, timeout_s: float = 20.0
) -> dict[TopicPartition, list[Event]]:
    """Fetch until ``count`` events arrived; returns them per partition, in fetch order."""
    events: dict[TopicPartition, list[Event]] = {}
    received = 0
    deadline = time.monotonic() + timeout_s
    while received < count:
        assert time.monotonic() < deadline, f"only {received} of {count} events arrived"
        for partition, batch in await consumer.fetch(200, 5_000):
            events.setdefault(partition, []).extend(batch)
            received += len(batch)
    return events


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def record(i: int) -> tuple[bytes | None, bytes | None, Headers, int]:
    """Varied records: missing keys and values, no/one/two headers, distinct timestamps."""
    key = None if i % 7 == 0 else b"key-%d" % i
    value = None if i % 11 == 0 else b"value-%d-" % i + bytes(i % 50)
    headers: Headers = ()
    if i % 3 == 1:
        headers = (("trace", b"%d" % i),)
    elif i % 3 == 2:
        headers = (("a", b""), ("b", b"\x00\xff" * (i % 4)))
    return key, value, headers, 1_700_000_000_000 + i


# -- topics ---------------------------------------------------------------------------------


def test_ensure_topics_creates_missing_topics_with_partitions_and_configs(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            counts = await transport.ensure_topics([
                TopicSpec("orders", 3, {"retention.ms": "3600000", "cleanup.policy": "compact"}),
                TopicSpec("defaults"),
            ])
            assert counts == {"orders": 3, "defaults": 1}  # 1: the broker's num.partitions
            assert transport.partition_count("orders") == 3
            with pytest.raises(KeyError):  # what the worker expects before it creates a topic
                transport.partition_count("never-mentioned")

            # An existing topic keeps its partitions and configs.
            again = await transport.ensure_topics([TopicSpec("orders", 8, {"retention.ms": "1"})])
            assert again == {"orders": 3}
            assert await topic_configs(broker.bootstrap, "orders") >= {
                ("retention.ms", "3600000"), ("cleanup.policy", "compact")}

            # Two workers creating the same topic at once both succeed.
            async with started(broker.bootstrap, "other") as other:
                both = await asyncio.gather(
                    transport.ensure_topics([TopicSpec("raced", 2)]),
                    other.ensure_topics([TopicSpec("raced", 2)]),
                )
            assert list(both) == [{"raced": 2}, {"raced": 2}]

            with pytest.raises(TopicSetupError, match="bad-config.*InvalidConfiguration"):
                await transport.ensure_topics(
                    [TopicSpec("bad-config", 1, {"cleanup.policy": "sometimes"})])

    run(scenario())


async def topic_configs(bootstrap: str, topic: str) -> set[tuple[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [resource] = response.to_object()["resources"]
    return {(c["config_names"], c["config_value"]) for c in resource["config_entries"]}


# -- producing and consuming ----------------------------------------------------------------


def test_records_round_trip_exactly_in_offset_order(broker: BrokerProcess) -> None:
    count, partitions = 10_000, 4

    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            await transport.ensure_topics([TopicSpec("trips", partitions)])
            for i in range(count):
                await transport.send("trips", i % partitions, *record(i))
            await transport.flush()

            consumer = transport.consumer("readers", ["trips"], Recorder("only"))
            await consumer.start()
            try:
                events = await read(consumer, count)
                await asyncio.sleep(0.3)
                assert await consumer.fetch(100, 100) == []  # nothing beyond what was sent
            finally:
                await consumer.close()

        assert sorted(events) == [TopicPartition("trips", p) for p in range(partitions)]
        for (topic, partition), batch in events.items():
            assert [e.offset for e in batch] == list(range(count // partitions))
            for event in batch:
                i = event.offset * partitions + partition
                key, value, headers, timestamp = record(i)
                assert (event.topic, event.partition) == (topic, partition)
                assert (event.key, event.value, event.headers, event.timestamp) == (
                    key, value, headers, timestamp)

    run(scenario())


def test_concurrent_senders_and_flushes_keep_order_and_bound_unacked_batches(
    broker: BrokerProcess,
) -> None:
    senders, per_sender = 4, 300
    value = bytes(20_000)  # ~26 records fill a batch: many hand-overs, often contended

    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            await transport.ensure_topics([TopicSpec("busy", 1)])
            most_unacked = 0

            async def sender(n: int) -> None:
                nonlocal most_unacked
                for i in range(per_sender):
                    await transport.send("busy", 0, b"%d" % n, value + b"%d" % i, (), i)
                    most_unacked = max(most_unacked, transport._shipper.unacked_batches)

            async def checkpoints() -> None:  # the runtime flushes while agents keep sending
                while not all(task.done() for task in sending):
                    await transport.flush()
                    await asyncio.sleep(0.01)

            sending = [asyncio.create_task(sender(n)) for n in range(senders)]
            await asyncio.gather(*sending, checkpoints())
            await transport.flush()
            assert most_unacked <= UNACKED_BATCHES_MAX + 1

            consumer = transport.consumer("busy-readers", ["busy"], Recorder("only"))
            await consumer.start()
            try:
                [events] = (await read(consumer, senders * per_sender)).values()
            finally:
                await consumer.close()
        for n in range(senders):
            sent = [e.value[len(value):] for e in events if e.key == b"%d" % n]
            assert sent == [b"%d" % i for i in range(per_sender)]

    run(scenario())


def test_a_new_member_resumes_at_committed_offsets_and_seek_moves(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            await transport.ensure_topics([TopicSpec("resume", 2)])
            for i in range(200):
                await transport.send("resume", i % 2, None, b"%d" % i, (), i)
            await transport.flush()
            p0, p1 = TopicPartition("resume", 0), TopicPartition("resume", 1)

            first = transport.consumer("resumers", ["resume"], Recorder("first"))
            await first.start()
            try:
                await read(first, 200)
                await first.commit({p0: 30, p1: 70})
            finally:
                await first.close()

            second = transport.consumer("resumers", ["resume"], Recorder("second"))
            await second.start()
            try:
                events = await read(second, (100 - 30) + (100 - 70))
                assert events[p0][0].offset == 30 and events[p1][0].offset == 70
                second.seek(p0, 95)
                again = await read(second, 5)
                assert [e.offset for e in again[p0]] == [95, 96, 97, 98, 99]
                assert second.assignment() == {p0, p1}
            finally:
                await second.close()

    run(scenario())


def test_two_members_split_partitions_and_one_takes_all_when_the_other_leaves(
    broker: BrokerProcess,
) -> None:
    topic, partitions = "shared", 4
    everything = frozenset(TopicPartition(topic, p) for p in range(partitions))

    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            await transport.ensure_topics([TopicSpec(topic, partitions)])
            for i in range(400):
                await transport.send(topic, i % partitions, None, b"%d" % i, (), i)
            await transport.flush()

            a_listener, b_listener = Recorder("a"), Recorder("b")
            a = transport.consumer("split", [topic], a_listener)
            b = transport.consumer("split", [topic], b_listener)
            positions: dict[TopicPartition, int] = {}
            committed_in_revoke: list[frozenset[TopicPartition]] = []

            async def commit_on_revoke(revoked: frozenset[TopicPartition]) -> None:
                # What the runtime does: commit what it read before the partitions move.
                await a.commit({tp: positions[tp] for tp in revoked if tp in positions})
                committed_in_revoke.append(revoked)

            a_listener.on_revoke = commit_on_revoke

            async def poll(consumer: TransportConsumer) -> None:
                while True:  # like the runtime: always blocked in fetch between batches
                    for tp, batch in await consumer.fetch(500, 1_000):
                        positions[tp] = batch[-1].offset + 1

            await a.start()
            polling_a = asyncio.create_task(poll(a))
            await wait_until(lambda: a.assignment() == everything)
            assert a_listener.calls == [("assigned", everything)]
            await wait_until(lambda: len(positions) == partitions)

            await b.start()
            polling_b = asyncio.create_task(poll(b))
            await wait_until(lambda: len(a_listener.calls) == 3 and len(b_listener.calls) == 1)
            assert a_listener.calls[1] == ("revoked", everything)
            assert committed_in_revoke == [everything]
            (a_event, a_now), (b_event, b_now) = a_listener.calls[2], b_listener.calls[0]
            assert (a_event, b_event) == ("assigned", "assigned")
            assert len(a_now) == len(b_now) == 2 and a_now | b_now == everything
            assert a.assignment() == a_now and b.assignment() == b_now

            polling_b.cancel()
            await b.close()
            await wait_until(lambda: len(a_listener.calls) == 5)
            assert a_listener.calls[3:] == [("revoked", a_now), ("assigned", everything)]
            assert a.assignment() == everything
            assert b_listener.calls == [("assigned", b_now)]  # close does not call back

            polling_a.cancel()
            await a.close()

    run(scenario())


# -- failures -------------------------------------------------------------------------------


def test_flush_raises_when_a_batch_is_refused_and_the_transport_recovers(
    broker: BrokerProcess,
) -> None:
    async def scenario() -> None:
        async with started(broker.bootstrap) as transport:
            await transport.ensure_topics(
                [TopicSpec("small", 2, {"max.message.bytes": "4096"})])
            await transport.send("small", 0, None, b"before", (), 1)
            await transport.flush()

            await transport.send("small", 0, None, bytes(10_000), (), 2)
            await transport.send("small", 1, None, b"unaffected", (), 3)
            with pytest.raises(DeliveryError, match=r"small\[0\].*MESSAGE_SIZE_TOO_LARGE") as e:
                await transport.flush()
            assert (e.value.topic, e.value.partition, e.value.records) == ("small", 0, 1)

            # The producer was replaced: the refused batch left a gap in its sequence numbers.
            await transport.send("small", 0, None, b"after", (), 4)
            await transport.flush()

            consumer = transport.consumer("small-readers", ["small"], Recorder("only"))
            await consumer.start()
            try:
                events = await read(consumer, 3)
            finally:
                await consumer.close()
        values = {tp.partition: [e.value for e in batch] for tp, batch in events.items()}
        assert values == {0: [b"before", b"after"], 1: [b"unaffected"]}

    run(scenario())


def test_an_unreachable_broker_is_reported_quickly_with_its_address() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        refused = f"127.0.0.1:{probe.getsockname()[1]}"
    with socket.socket() as silent:  # accepts connections but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = f"127.0.0.1:{silent.getsockname()[1]}"

        async def scenario() -> None:
            for address, timeout_ms in ((refused, 10_000), (mute, 1_000)):
                transport = KafkaTransport(address, client_id="t", connect_timeout_ms=timeout_ms)
                started_at = time.monotonic()
                with pytest.raises(BrokerUnreachableError, match=address) as error:
                    await transport.start()
                assert time.monotonic() - started_at < timeout_ms / 1000 + 2.0
                assert error.value.bootstrap == address

                consumer = transport.consumer("g", ["t"], Recorder("c"))
                with pytest.raises(BrokerUnreachableError, match=address):
                    await consumer.start()

        run(scenario())


def test_a_broker_that_dies_fails_flush_in_bounded_time(broker: BrokerProcess) -> None:
    async def scenario() -> None:
        transport = KafkaTransport(broker.bootstrap, client_id="t", delivery_timeout_ms=2_000)
        await transport.start()
        await transport.ensure_topics([TopicSpec("doomed", 2)])
        consumer = transport.consumer("doomed-readers", ["doomed"], Recorder("only"))
        await consumer.start()
        for i in range(100):
            await transport.send("doomed", i % 2, None, b"%d" % i, (), i)
        broker.kill()

        started_at = time.monotonic()
        with pytest.raises(DeliveryError, match="doomed") as error:
            await transport.flush()
        assert time.monotonic() - started_at < 2.0 + 5.0
        assert "close and reopen" in "\n".join(error.value.__notes__)
        with pytest.raises(TransportError, match="reopen"):
            await transport.flush()

        started_at = time.monotonic()
        await consumer.close()
        await transport.close()
        assert time.monotonic() - started_at < 10.0

    run(scenario())
