"""aiokafka against a real ``streamer broker`` subprocess.

pytest-asyncio is not used: each test runs its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    InvalidConfigurationError,
    InvalidPartitionsError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.structs import OffsetAndMetadata

from tests.broker_process import BrokerProcess

from .rebalance import three_member_group
from .workload import (
    BROKER_STOPS,
    CODECS,
    Message,
    Received,
    check_round_trip,
    codec_messages,
    hour_ago_ms,
    stop_broker,
    unique_name,
    varied_messages,
)

T = TypeVar("T")
TIMEOUT_S = 30.0
TIMEOUT_MS = int(TIMEOUT_S * 1000)
DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)
SOURCE_DYNAMIC_TOPIC, SOURCE_DEFAULT = 1, 5  # Kafka's ConfigSource values


def run(scenario: Awaitable[T]) -> T:
    """Run one scenario on a fresh event loop; a hang fails the test instead of the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario, timeout=2 * TIMEOUT_S)

    return asyncio.run(bounded())


# -- client plumbing ---------------------------------------------------------------------


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    await admin.start()
    return admin


def _topic_errors(response: Any) -> dict[str, int]:
    return {t["topic"]: t["error_code"] for t in response.to_object()["topic_errors"]}


async def _create_topic(bootstrap: str, topic: str, partitions: int, **config: str) -> None:
    admin = await _admin(bootstrap)
    try:
        response = await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=config)])
        assert _topic_errors(response) == {topic: 0}
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, messages: Sequence[Message], **config: Any
) -> None:
    """Send ``messages`` in order and wait until each is acknowledged without error."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, **config})
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=m.value, key=m.key, partition=m.partition,
                                timestamp_ms=m.timestamp_ms, headers=list(m.headers))
            for m in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _consumer(bootstrap: str, **config: Any) -> AIOKafkaConsumer:
    settings: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **{**settings, **config})
    await consumer.start()
    return consumer


def _received(record: Any) -> Received:
    return Received(
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
        timestamp_ms=record.timestamp,
        create_time=record.timestamp_type == 0,
    )


async def _consume(consumer: AIOKafkaConsumer, count: int) -> list[Received]:
    """The next ``count`` records; fails if they do not come within the timeout."""
    records: list[Received] = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(records) < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=count - len(records))
            records.extend(_received(r) for rs in batches.values() for r in rs)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def _read_all(bootstrap: str, topic: str, partitions: int) -> list[Received]:
    """Every record of the topic, from the start of each partition to its high watermark."""
    consumer = await _consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning()
        return await _consume(consumer, sum(ends[tp] - starts[tp] for tp in tps))
    finally:
        await consumer.stop()


# -- round trips -------------------------------------------------------------------------


def test_round_trip_keys_headers_timestamps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("round-trip")
    # aiokafka refuses a record with neither key nor value ("Need at least one: key or
    # value").
    sent = varied_messages(4, 600, null_key_and_value=False)

    async def scenario() -> list[Received]:
        await _create_topic(bootstrap, topic, 4)
        await produce(bootstrap, topic, sent)
        return await _read_all(bootstrap, topic, 4)

    check_round_trip(sent, run(scenario()))


@pytest.mark.parametrize("codec", CODECS)
def test_compression_round_trip(module_broker: BrokerProcess, codec: str) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name(f"codec-{codec}")
    sent = codec_messages(500)

    async def scenario() -> tuple[list[Received], Any]:
        await _create_topic(bootstrap, topic, 1)
        await produce(bootstrap, topic, sent, compression_type=codec, linger_ms=50)
        # The broker finds a record inside a compressed batch: it decompresses the codec.
        consumer = await _consumer(bootstrap)
        try:
            tp = TopicPartition(topic, 0)
            found = (await consumer.offsets_for_times({tp: sent[250].timestamp_ms}))[tp]
        finally:
            await consumer.stop()
        return await _read_all(bootstrap, topic, 1), found

    records, found = run(scenario())
    check_round_trip(sent, records)
    assert (found.offset, found.timestamp) == (250, sent[250].timestamp_ms)


def test_log_append_time_topic_stamps_records(module_broker: BrokerProcess) -> None:
    """``message.timestamp.type=LogAppendTime``: the broker's clock replaces the producer's
    timestamps (and recomputes the batch CRC, which the consumer checks)."""
    bootstrap = module_broker.bootstrap
    topic = unique_name("log-append-time")
    sent = varied_messages(1, 50, null_key_and_value=False)

    async def scenario() -> list[Received]:
        await _create_topic(bootstrap, topic, 1, **{"message.timestamp.type": "LogAppendTime"})
        await produce(bootstrap, topic, sent)
        return await _read_all(bootstrap, topic, 1)

    before_ms = int(time.time() * 1000)
    records = run(scenario())
    after_ms = int(time.time() * 1000)
    assert [r.offset for r in records] == list(range(50))
    assert all(not r.create_time for r in records), "timestamp type is not LogAppendTime"
    assert all(before_ms - 1000 <= r.timestamp_ms <= after_ms + 1000 for r in records)
    stamped = [replace(m, timestamp_ms=r.timestamp_ms)
               for m, r in zip(sent, records, strict=True)]
    assert [r.as_sent() for r in records] == stamped


def test_record_larger_than_max_message_bytes_is_refused(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("too-large")

    async def scenario() -> list[Received]:
        await _create_topic(bootstrap, topic, 1, **{"max.message.bytes": "2000"})
        with pytest.raises(MessageSizeTooLargeError):
            await produce(bootstrap, topic, [Message(0, None, b"x" * 5000, (), hour_ago_ms())])
        await produce(bootstrap, topic, [Message(0, None, b"small", (), hour_ago_ms())])
        return await _read_all(bootstrap, topic, 1)

    assert [r.value for r in run(scenario())] == [b"small"]


# -- consumer groups ---------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ["sticky", "range"])
def test_group_of_three_rebalances_on_join_leave_and_death(
    module_broker: BrokerProcess, tmp_path: Path, assignor: str
) -> None:
    bootstrap = module_broker.bootstrap
    topics: list[str] = []

    def send(batch: Sequence[tuple[int, str]]) -> None:
        messages = [Message(p, None, value.encode(), (), hour_ago_ms()) for p, value in batch]
        run(produce(bootstrap, topics[0], messages))

    def create(topic: str, partitions: int) -> None:
        topics.append(topic)
        run(_create_topic(bootstrap, topic, partitions))

    timings = three_member_group("aiokafka", bootstrap, assignor, send, tmp_path, create)
    print("rebalance seconds:", {what: round(s, 2) for what, s in timings.items()})


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_committed_offsets_resume_after_broker_and_consumer_restart(
    broker: BrokerProcess, how: str
) -> None:
    topic, group = unique_name("resume"), unique_name("resume-group")
    commit_at = {0: 4, 1: 7, 2: 10}  # p2: everything
    tps = [TopicPartition(topic, p) for p in range(3)]

    def member_config() -> dict[str, Any]:
        return {"group_id": group, "heartbeat_interval_ms": 500,
                "partition_assignment_strategy": (RoundRobinPartitionAssignor,)}

    async def before_restart() -> None:
        await _create_topic(broker.bootstrap, topic, 3)
        await produce(broker.bootstrap, topic, [
            Message(i % 3, None, f"before-{i}".encode(), (), hour_ago_ms() + i)
            for i in range(30)
        ])
        consumer = await _consumer(broker.bootstrap, **member_config())
        consumer.subscribe([topic])
        try:
            assert len(await _consume(consumer, 30)) == 30
            await consumer.commit({tp: OffsetAndMetadata(commit_at[tp.partition],
                                                         f"meta-{tp.partition}")
                                   for tp in tps})
        finally:
            await consumer.stop()

    async def after_restart(bootstrap: str) -> tuple[set[tuple[int, int]], list[Any]]:
        await produce(bootstrap, topic, [
            Message(i % 3, None, f"after-{i}".encode(), (), hour_ago_ms() + i)
            for i in range(15)
        ])
        expected = {(p, offset) for p in range(3) for offset in range(commit_at[p], 15)}
        members = [await _consumer(bootstrap, **member_config()) for _ in range(2)]
        committed = {tp.partition: await members[0].committed(tp) for tp in tps}
        assert committed == commit_at
        seen: list[tuple[int, int]] = []
        uncommitted: set[tuple[int, int]] = set()

        async def member(consumer: AIOKafkaConsumer) -> None:
            consumer.subscribe([topic])
            while set(seen) < expected:
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    for record in records:
                        seen.append((tp.partition, record.offset))
                        try:
                            await consumer.commit({tp: record.offset + 1})
                        except KafkaError:
                            uncommitted.add((tp.partition, record.offset))

        try:
            async with asyncio.timeout(TIMEOUT_S):
                await asyncio.gather(*(member(c) for c in members))
        finally:
            for consumer in members:
                await consumer.stop()
        assert set(seen) == expected, f"re-delivered {sorted(set(seen) - expected)}"
        return uncommitted, seen

    run(before_restart())
    stop_broker(broker, how)
    broker = broker.restart()
    try:
        uncommitted, seen = run(after_restart(broker.bootstrap))
    finally:
        broker.kill()
    duplicates = [item for item, n in Counter(seen).items() if n > 1]
    assert set(duplicates) <= uncommitted, f"delivered twice: {duplicates}"


# -- idempotent producers ----------------------------------------------------------------


IDEMPOTENT = {"enable_idempotence": True, "acks": "all", "max_batch_size": 4096}


def test_idempotent_producer_no_duplicates_no_gaps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("idempotent")
    sent = [Message(i % 3, None, f"{i}".encode(), (), hour_ago_ms()) for i in range(5_000)]

    async def scenario() -> list[Received]:
        await _create_topic(bootstrap, topic, 3)
        await produce(bootstrap, topic, sent, **IDEMPOTENT)
        return await _read_all(bootstrap, topic, 3)

    check_round_trip(sent, run(scenario()))


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_idempotent_producer_retries_across_broker_restart(
    broker: BrokerProcess, how: str
) -> None:
    """The broker goes away while an idempotent producer sends; it retries, and each
    message it reported delivered is in the topic exactly once, in order."""
    topic = unique_name("idempotent-restart")
    total = 10_000
    restarted = [broker]

    async def scenario() -> tuple[list[int], list[tuple[int, BaseException]], list[int]]:
        await _create_topic(broker.bootstrap, topic, 3)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2,
                                    retry_backoff_ms=50, request_timeout_ms=TIMEOUT_MS,
                                    **IDEMPOTENT)
        await producer.start()
        try:
            first = 6_000
            futures = [await producer.send(topic, value=str(i).encode(), partition=i % 3)
                       for i in range(first)]
            async with asyncio.timeout(TIMEOUT_S):
                while sum(f.done() for f in futures) < first // 2:
                    await asyncio.sleep(0.001)
            # The rest is sent just before the broker stops, so whatever the machine's speed,
            # requests are in flight or queued when it goes away.
            futures += [await producer.send(topic, value=str(i).encode(), partition=i % 3)
                        for i in range(first, total)]
            assert not all(f.done() for f in futures), "nothing left in flight to retry"
            # In threads, so the producer sees the broker go away and come back meanwhile.
            await asyncio.to_thread(stop_broker, broker, how)
            restarted[0] = await asyncio.to_thread(broker.restart)
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        succeeded = [i for i, o in enumerate(outcomes) if not isinstance(o, BaseException)]
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        records = await _read_all(restarted[0].bootstrap, topic, 3)
        return succeeded, failed, [int(r.value) for r in records if r.value]

    try:
        succeeded, failed, values = run(scenario())
    finally:
        restarted[0].kill()
    counts = Counter(values)
    assert not [v for v in succeeded if counts[v] != 1], "delivered, but not exactly once"
    assert not [v for v, n in counts.items() if n > 1], "duplicates in the topic"
    for partition in range(3):
        stored = [v for v in values if v % 3 == partition]
        assert stored == sorted(stored), f"partition {partition} out of order"
    assert not failed, f"{len(failed)} reported failed, e.g. {failed[:3]}"


# -- topic admin -------------------------------------------------------------------------


TOPIC_CONFIG = {"retention.ms": "3600000", "retention.bytes": "1048576",
                "cleanup.policy": "compact", "segment.bytes": "1048576",
                "max.message.bytes": "65536"}


async def _describe(admin: AIOKafkaAdminClient, topic: str) -> dict[str, dict[str, Any]]:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    [resource] = response.to_object()["resources"]
    assert resource["error_code"] == 0, resource
    return {entry["config_names"]: entry for entry in resource["config_entries"]}


async def _alter(admin: AIOKafkaAdminClient, topic: str, configs: dict[str, str]) -> int:
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    [resource] = responses[0].to_object()["resources"]
    return int(resource["error_code"])


def test_topic_admin(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("admin")

    async def scenario() -> None:
        admin = await _admin(bootstrap)
        try:
            await _create_topic(bootstrap, topic, 2, **TOPIC_CONFIG)
            assert topic in await admin.list_topics()
            [described] = await admin.describe_topics([topic])
            assert sorted(p["partition"] for p in described["partitions"]) == [0, 1]

            entries = await _describe(admin, topic)
            for name, value in TOPIC_CONFIG.items():
                assert entries[name]["config_value"] == value, name
                assert entries[name]["config_source"] == SOURCE_DYNAMIC_TOPIC, name
            assert entries["flush.ms"]["config_source"] == SOURCE_DEFAULT

            # AlterConfigs replaces the whole set: what it does not name goes back to default.
            assert await _alter(admin, topic, {"retention.ms": "7200000"}) == 0
            entries = await _describe(admin, topic)
            assert entries["retention.ms"]["config_value"] == "7200000"
            assert entries["cleanup.policy"]["config_value"] == "delete"
            assert entries["cleanup.policy"]["config_source"] == SOURCE_DEFAULT

            await admin.create_partitions({topic: NewPartitions(4)})
            [described] = await admin.describe_topics([topic])
            assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2, 3]
            await produce(bootstrap, topic, [
                Message(3, b"k", f"on-new-partition-{i}".encode(), (), hour_ago_ms() + i)
                for i in range(10)
            ])

            tp = TopicPartition(topic, 3)
            assert await admin.delete_records({tp: RecordsToDelete(6)}) == {tp: 6}
            consumer = await _consumer(bootstrap)
            try:
                consumer.assign([tp])
                assert await consumer.beginning_offsets([tp]) == {tp: 6}
                assert await consumer.end_offsets([tp]) == {tp: 10}
                await consumer.seek_to_beginning(tp)
                assert [r.offset for r in await _consume(consumer, 4)] == [6, 7, 8, 9]
            finally:
                await consumer.stop()

            response = await admin.delete_topics([topic])
            assert response.to_object()["topic_error_codes"] == [
                {"topic": topic, "error_code": 0}]
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()

    run(scenario())


def test_topic_admin_errors(module_broker: BrokerProcess) -> None:
    """aiokafka's admin answers with the response; its error codes map to typed errors."""
    bootstrap = module_broker.bootstrap
    topic = unique_name("admin-errors")

    async def scenario() -> None:
        admin = await _admin(bootstrap)
        try:
            await _create_topic(bootstrap, topic, 1)
            again = await admin.create_topics([NewTopic(topic, 1, 1)])
            assert for_code(_topic_errors(again)[topic]) is TopicAlreadyExistsError

            bad = unique_name("bad-config")
            invalid = await admin.create_topics(
                [NewTopic(bad, 1, 1, topic_configs={"cleanup.policy": "sometimes"})])
            assert for_code(_topic_errors(invalid)[bad]) is InvalidConfigurationError
            assert bad not in await admin.list_topics()

            unknown = unique_name("never-created")
            gone = (await admin.delete_topics([unknown])).to_object()["topic_error_codes"]
            assert for_code(gone[0]["error_code"]) is UnknownTopicOrPartitionError

            with pytest.raises(InvalidPartitionsError):
                await admin.create_partitions({topic: NewPartitions(1)})

            code = await _alter(admin, topic, {"segment.bytes": "x"})
            assert for_code(code) is InvalidConfigurationError
        finally:
            await admin.close()

    run(scenario())


# -- ListOffsets and seeks ---------------------------------------------------------------


async def _timed_topic(bootstrap: str) -> tuple[str, int]:
    """Partition 0: timestamps base, base+1000, ...; partition 1 out of order."""
    topic = unique_name("timestamps")
    await _create_topic(bootstrap, topic, 2)
    base = hour_ago_ms()
    shuffled = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4]
    sent = [Message(0, None, f"p0-{i}".encode(), (), base + 1000 * i) for i in range(10)]
    sent += [Message(1, None, f"p1-{i}".encode(), (), base + 1000 * s)
             for i, s in enumerate(shuffled)]
    await produce(bootstrap, topic, sent)
    return topic, base


def test_offsets_for_times_and_watermarks(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap

    async def scenario() -> None:
        topic, base = await _timed_topic(bootstrap)
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        consumer = await _consumer(bootstrap)
        try:
            assert await consumer.beginning_offsets([p0, p1]) == {p0: 0, p1: 0}
            assert await consumer.end_offsets([p0, p1]) == {p0: 10, p1: 10}

            async def lookup(tp: TopicPartition, timestamp_ms: int) -> tuple[int, int] | None:
                found = (await consumer.offsets_for_times({tp: timestamp_ms}))[tp]
                return None if found is None else (found.offset, found.timestamp)

            assert await lookup(p0, base - 1) == (0, base)
            assert await lookup(p0, base) == (0, base)
            assert await lookup(p0, base + 2500) == (3, base + 3000)
            assert await lookup(p0, base + 9000) == (9, base + 9000)
            assert await lookup(p0, base + 9001) is None  # every record is older
            # Out of order: the first offset whose timestamp reaches the target.
            assert await lookup(p1, base + 8500) == (2, base + 9000)
            assert await lookup(p1, base + 4000) == (0, base + 5000)
            assert await lookup(p1, base + 9500) is None
        finally:
            await consumer.stop()

    run(scenario())


def test_seeks_consume_from_the_right_place(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap

    async def scenario() -> None:
        topic, base = await _timed_topic(bootstrap)
        tp = TopicPartition(topic, 0)
        consumer = await _consumer(bootstrap)
        try:
            consumer.assign([tp])
            assert [r.offset for r in await _consume(consumer, 3)] == [0, 1, 2]
            consumer.seek(tp, 7)
            assert [r.offset for r in await _consume(consumer, 3)] == [7, 8, 9]
            await consumer.seek_to_beginning(tp)
            assert (await _consume(consumer, 1))[0].value == b"p0-0"
            found = (await consumer.offsets_for_times({tp: base + 4000}))[tp]
            consumer.seek(tp, found.offset)
            assert (await _consume(consumer, 1))[0].value == b"p0-4"
            await consumer.seek_to_end(tp)
            assert await consumer.position(tp) == 10
            assert await consumer.getmany(timeout_ms=300) == {}
            await produce(bootstrap, topic, [Message(0, None, b"after-end", (), base)])
            [record] = await _consume(consumer, 1)
            assert (record.offset, record.value) == (10, b"after-end")
            assert await consumer.position(tp) == 11
        finally:
            await consumer.stop()

    run(scenario())
