"""confluent-kafka (librdkafka) against a real ``streamer broker`` subprocess."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as ConfluentMessage
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

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
    wait_until,
)

TIMEOUT_S = 30.0


# -- client plumbing ---------------------------------------------------------------------


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _create_topic(bootstrap: str, topic: str, partitions: int, **config: str) -> None:
    admin = _admin(bootstrap)  # kept alive until the answer is in: its futures need it
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)],
        operation_timeout=TIMEOUT_S,
    )
    futures[topic].result(TIMEOUT_S)


def produce(bootstrap: str, topic: str, messages: Sequence[Message], **config: object) -> None:
    """Send ``messages`` in order and wait until each is acknowledged without error."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _: ConfluentMessage) -> None:
        if error is not None:
            errors.append(error)

    for message in messages:
        producer.produce(
            topic, value=message.value, key=message.key, partition=message.partition,
            timestamp=message.timestamp_ms, headers=list(message.headers),
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0, "messages still in flight"
    assert not errors, errors[:5]


def _consumer(bootstrap: str, **config: object) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique_name("confluent-reader"),
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        # A seek or a ListOffsets waits for the parked fetch before it on the connection
        # (answers go back in request order, as in Kafka): keep that wait short.
        "fetch.wait.max.ms": 100, **config,
    })


def _received(message: ConfluentMessage) -> Received:
    timestamp_type, timestamp_ms = message.timestamp()
    return Received(
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=tuple(message.headers() or ()),
        timestamp_ms=timestamp_ms,
        create_time=timestamp_type == TIMESTAMP_CREATE_TIME,
    )


def _consume(consumer: Consumer, count: int) -> list[Received]:
    """The next ``count`` records; fails if they do not come within the timeout."""
    records: list[Received] = []

    def more() -> bool:
        for message in consumer.consume(num_messages=count - len(records), timeout=0.2):
            if message.error() is not None:
                raise KafkaException(message.error())
            records.append(_received(message))
        return len(records) >= count

    wait_until(more, TIMEOUT_S, f"{count} records consumed", lambda: f"got {len(records)}")
    return records


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[Received]:
    """Every record of the topic, from the start of each partition to its high watermark."""
    consumer = _consumer(bootstrap)
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT_S)
                for p in range(partitions)]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        return _consume(consumer, sum(high - low for low, high in ends))
    finally:
        consumer.close()


# -- round trips -------------------------------------------------------------------------


def test_round_trip_keys_headers_timestamps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("round-trip")
    _create_topic(bootstrap, topic, 4)
    sent = varied_messages(4, 600)
    produce(bootstrap, topic, sent)
    check_round_trip(sent, _read_all(bootstrap, topic, 4))


@pytest.mark.parametrize("codec", CODECS)
def test_compression_round_trip(module_broker: BrokerProcess, codec: str) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name(f"codec-{codec}")
    _create_topic(bootstrap, topic, 1)
    sent = codec_messages(500)
    produce(bootstrap, topic, sent, **{"compression.type": codec, "linger.ms": 50})
    check_round_trip(sent, _read_all(bootstrap, topic, 1))
    # The broker finds a record inside a compressed batch: it decompresses the client's codec.
    consumer = _consumer(bootstrap)
    try:
        [found] = consumer.offsets_for_times(
            [TopicPartition(topic, 0, sent[250].timestamp_ms)], TIMEOUT_S)
        assert found.offset == 250
    finally:
        consumer.close()


def test_log_append_time_topic_stamps_records(module_broker: BrokerProcess) -> None:
    """``message.timestamp.type=LogAppendTime``: the broker's clock replaces the producer's
    timestamps (and recomputes the batch CRC, which the consumer checks)."""
    bootstrap = module_broker.bootstrap
    topic = unique_name("log-append-time")
    _create_topic(bootstrap, topic, 1, **{"message.timestamp.type": "LogAppendTime"})
    sent = varied_messages(1, 50)
    before_ms = int(time.time() * 1000)
    produce(bootstrap, topic, sent)
    after_ms = int(time.time() * 1000)
    records = _read_all(bootstrap, topic, 1)
    assert [r.offset for r in records] == list(range(50))
    assert all(not r.create_time for r in records), "timestamp type is not LogAppendTime"
    assert all(before_ms - 1000 <= r.timestamp_ms <= after_ms + 1000 for r in records)
    stamped = [replace(m, timestamp_ms=r.timestamp_ms)
               for m, r in zip(sent, records, strict=True)]
    assert [r.as_sent() for r in records] == stamped


def test_record_larger_than_max_message_bytes_is_refused(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("too-large")
    _create_topic(bootstrap, topic, 1, **{"max.message.bytes": "2000"})
    producer = Producer({"bootstrap.servers": bootstrap})
    errors: list[KafkaError | None] = []
    producer.produce(topic, value=b"x" * 5000, partition=0,
                     on_delivery=lambda error, _: errors.append(error))
    producer.flush(TIMEOUT_S)
    [error] = errors
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    produce(bootstrap, topic, [Message(0, None, b"small", (), hour_ago_ms())])
    assert [r.value for r in _read_all(bootstrap, topic, 1)] == [b"small"]


# -- consumer groups ---------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ["cooperative-sticky", "range"])
def test_group_of_three_rebalances_on_join_leave_and_death(
    module_broker: BrokerProcess, tmp_path: Path, assignor: str
) -> None:
    bootstrap = module_broker.bootstrap
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    topics: list[str] = []

    def send(batch: Sequence[tuple[int, str]]) -> None:
        for partition, value in batch:
            producer.produce(topics[0], value=value.encode(), partition=partition)
        assert producer.flush(TIMEOUT_S) == 0

    def create(topic: str, partitions: int) -> None:
        topics.append(topic)
        _create_topic(bootstrap, topic, partitions)

    timings = three_member_group("confluent", bootstrap, assignor, send, tmp_path, create)
    print("rebalance seconds:", {what: round(s, 2) for what, s in timings.items()})


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_committed_offsets_resume_after_broker_and_consumer_restart(
    broker: BrokerProcess, how: str
) -> None:
    topic, group = unique_name("resume"), unique_name("resume-group")
    _create_topic(broker.bootstrap, topic, 3)
    before = [Message(i % 3, None, f"before-{i}".encode(), (), hour_ago_ms() + i)
              for i in range(30)]
    produce(broker.bootstrap, topic, before)
    commit_at = {0: 4, 1: 7, 2: 10}  # p2: everything

    consumer = _consumer(broker.bootstrap, **{"group.id": group,
                                              "partition.assignment.strategy": "range"})
    consumer.subscribe([topic])
    assert len(_consume(consumer, 30)) == 30
    consumer.commit(
        offsets=[TopicPartition(topic, p, offset) for p, offset in commit_at.items()],
        asynchronous=False,
    )
    consumer.close()

    stop_broker(broker, how)
    broker = broker.restart()
    try:
        after = [Message(i % 3, None, f"after-{i}".encode(), (), hour_ago_ms() + i)
                 for i in range(15)]
        produce(broker.bootstrap, topic, after)
        expected = {(p, offset) for p in range(3) for offset in range(commit_at[p], 15)}

        consumers = [
            _consumer(broker.bootstrap, **{"group.id": group,
                                           "partition.assignment.strategy": "range"})
            for _ in range(2)
        ]
        committed = consumers[0].committed(
            [TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT_S
        )
        assert {tp.partition: tp.offset for tp in committed} == commit_at
        for c in consumers:
            c.subscribe([topic])
        seen: list[tuple[int, int]] = []
        uncommitted: set[tuple[int, int]] = set()

        def progress() -> bool:
            for c in consumers:
                for message in c.consume(num_messages=100, timeout=0.1):
                    assert message.error() is None, message.error()
                    seen.append((message.partition(), message.offset()))
                    try:
                        c.commit(message=message, asynchronous=False)
                    except KafkaException:
                        uncommitted.add((message.partition(), message.offset()))
            return set(seen) >= expected

        wait_until(progress, TIMEOUT_S, "every uncommitted record consumed",
                   lambda: f"missing {sorted(expected - set(seen))}")
        assert set(seen) == expected, f"re-delivered {sorted(set(seen) - expected)}"
        duplicates = [item for item, n in Counter(seen).items() if n > 1]
        assert set(duplicates) <= uncommitted, f"delivered twice: {duplicates}"
        for c in consumers:
            c.close()
    finally:
        broker.kill()


# -- idempotent producers ----------------------------------------------------------------


IDEMPOTENT = {"enable.idempotence": True, "acks": "all", "max.in.flight": 5,
              "linger.ms": 2, "batch.num.messages": 200}


def test_idempotent_producer_no_duplicates_no_gaps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("idempotent")
    _create_topic(bootstrap, topic, 3)
    sent = [Message(i % 3, None, f"{i}".encode(), (), hour_ago_ms()) for i in range(20_000)]
    produce(bootstrap, topic, sent, **IDEMPOTENT)
    check_round_trip(sent, _read_all(bootstrap, topic, 3))


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_idempotent_producer_retries_across_broker_restart(
    broker: BrokerProcess, how: str
) -> None:
    """The broker goes away while an idempotent producer sends; it retries, and each
    message it reported delivered is in the topic exactly once, in order."""
    topic = unique_name("idempotent-restart")
    _create_topic(broker.bootstrap, topic, 3)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **IDEMPOTENT,
                         "message.timeout.ms": 60_000, "retry.backoff.ms": 50,
                         "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500})
    succeeded: list[int] = []  # delivery reports run inside poll() and flush(), here
    failed: list[tuple[int, str]] = []

    def report(error: KafkaError | None, message: ConfluentMessage) -> None:
        if error is None:
            succeeded.append(int(message.value()))
        else:
            failed.append((int(message.value()), str(error)))

    total = 30_000
    first = 20_000
    restarted = broker
    try:
        for i in range(first):
            producer.produce(topic, value=str(i).encode(), partition=i % 3, on_delivery=report)
        wait_until(lambda: producer.poll(0.01) >= 0 and len(succeeded) >= first // 2,
                   TIMEOUT_S, "half of the first messages delivered")
        # The rest is queued just before the broker stops, so whatever the machine's speed,
        # requests are in flight or queued when it goes away (the first ones may all be done).
        for i in range(first, total):
            producer.produce(topic, value=str(i).encode(), partition=i % 3, on_delivery=report)
        assert len(producer) > 0, "nothing left in flight to retry"
        stop_broker(broker, how)
        restarted = broker.restart()
        assert producer.flush(60) == 0, "messages still in flight"
        values = [int(r.value) for r in _read_all(restarted.bootstrap, topic, 3) if r.value]
    finally:
        restarted.kill()

    counts = Counter(values)
    assert not [v for v in succeeded if counts[v] != 1], "delivered, but not exactly once"
    assert not [v for v, n in counts.items() if n > 1], "duplicates in the topic"
    for partition in range(3):
        stored = [v for v in values if v % 3 == partition]
        assert stored == sorted(stored), f"partition {partition} out of order"
    assert not failed, f"{len(failed)} reported failed, e.g. {failed[:3]}"
    assert len(succeeded) == total


# -- topic admin -------------------------------------------------------------------------


TOPIC_CONFIG = {"retention.ms": "3600000", "retention.bytes": "1048576",
                "cleanup.policy": "compact", "segment.bytes": "1048576",
                "max.message.bytes": "65536"}


def _describe(admin: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries: dict[str, ConfigEntry] = admin.describe_configs([resource])[resource].result(
        TIMEOUT_S)
    return entries


def _error_code(future: Future[Any]) -> int:
    """The code of the KafkaError that ``future`` fails with."""
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT_S)
    return int(raised.value.args[0].code())


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_topic_admin(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    admin = _admin(bootstrap)
    topic = unique_name("admin")
    _create_topic(bootstrap, topic, 2, **TOPIC_CONFIG)

    metadata = admin.list_topics(timeout=TIMEOUT_S)
    assert topic in metadata.topics
    assert sorted(metadata.topics[topic].partitions) == [0, 1]
    assert len(metadata.brokers) == 1

    entries = _describe(admin, topic)
    for name, value in TOPIC_CONFIG.items():
        assert entries[name].value == value, name
        assert entries[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
    assert entries["flush.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    # AlterConfigs replaces the whole set: what it does not name goes back to its default.
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              set_config={"retention.ms": "7200000"})
    admin.alter_configs([resource])[resource].result(TIMEOUT_S)
    entries = _describe(admin, topic)
    assert entries["retention.ms"].value == "7200000"
    assert entries["cleanup.policy"].value == "delete"
    assert entries["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value

    # IncrementalAlterConfigs changes only what it names.
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([resource])[resource].result(TIMEOUT_S)
    entries = _describe(admin, topic)
    assert entries["cleanup.policy"].value == "compact"
    assert entries["retention.ms"].value == str(7 * 24 * 3600 * 1000)

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(TIMEOUT_S)
    metadata = admin.list_topics(topic, timeout=TIMEOUT_S)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2, 3]
    sent = [Message(3, b"k", f"on-new-partition-{i}".encode(), (), hour_ago_ms() + i)
            for i in range(10)]
    produce(bootstrap, topic, sent)

    deleted = admin.delete_records([TopicPartition(topic, 3, 6)])
    [(tp, future)] = deleted.items()
    assert future.result(TIMEOUT_S).low_watermark == 6
    consumer = _consumer(bootstrap)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 3), TIMEOUT_S) == (6, 10)
        consumer.assign([TopicPartition(topic, 3, OFFSET_BEGINNING)])
        assert [r.offset for r in _consume(consumer, 4)] == [6, 7, 8, 9]
    finally:
        consumer.close()

    admin.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    assert topic not in admin.list_topics(timeout=TIMEOUT_S).topics


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_topic_admin_errors(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    admin = _admin(bootstrap)
    topic = unique_name("admin-errors")
    _create_topic(bootstrap, topic, 1)

    again = admin.create_topics([NewTopic(topic, 1, 1)])[topic]
    assert _error_code(again) == KafkaError.TOPIC_ALREADY_EXISTS

    bad = unique_name("bad-config")
    invalid = admin.create_topics([NewTopic(bad, 1, 1, config={"cleanup.policy": "sometimes"})])
    assert _error_code(invalid[bad]) == KafkaError.INVALID_CONFIG
    assert bad not in admin.list_topics(timeout=TIMEOUT_S).topics

    unknown = unique_name("never-created")
    gone = admin.delete_topics([unknown], operation_timeout=TIMEOUT_S)[unknown]
    assert _error_code(gone) == KafkaError.UNKNOWN_TOPIC_OR_PART

    fewer = admin.create_partitions([NewPartitions(topic, 1)])[topic]
    assert _error_code(fewer) == KafkaError.INVALID_PARTITIONS

    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.bytes": "x"})
    assert _error_code(admin.alter_configs([resource])[resource]) == KafkaError.INVALID_CONFIG


# -- ListOffsets and seeks ---------------------------------------------------------------


def _timed_topic(bootstrap: str) -> tuple[str, int]:
    """Partition 0: timestamps base, base+1000, ...; partition 1 out of order."""
    topic = unique_name("timestamps")
    _create_topic(bootstrap, topic, 2)
    base = hour_ago_ms()
    shuffled = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4]
    sent = [Message(0, None, f"p0-{i}".encode(), (), base + 1000 * i) for i in range(10)]
    sent += [Message(1, None, f"p1-{i}".encode(), (), base + 1000 * s)
             for i, s in enumerate(shuffled)]
    produce(bootstrap, topic, sent)
    return topic, base


def test_offsets_for_times_and_watermarks(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, base = _timed_topic(bootstrap)
    consumer = _consumer(bootstrap)
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), TIMEOUT_S) == (0, 10)

        def lookup(partition: int, timestamp_ms: int) -> int:
            [found] = consumer.offsets_for_times(
                [TopicPartition(topic, partition, timestamp_ms)], TIMEOUT_S)
            assert found.error is None
            return int(found.offset)

        assert lookup(0, base - 1) == 0
        assert lookup(0, base) == 0
        assert lookup(0, base + 2500) == 3
        assert lookup(0, base + 9000) == 9
        assert lookup(0, base + 9001) == -1  # OFFSET_END: every record is older
        # Out of order: the first offset whose timestamp reaches the target.
        assert lookup(1, base + 8500) == 2  # 9000 at offset 2
        assert lookup(1, base + 4000) == 0  # 5000 at offset 0
        assert lookup(1, base + 9500) == -1
    finally:
        consumer.close()

    admin = _admin(bootstrap)
    specs = {TopicPartition(topic, 0): OffsetSpec.earliest(),
             TopicPartition(topic, 1): OffsetSpec.for_timestamp(base + 6500)}
    results = {tp.partition: f.result(TIMEOUT_S) for tp, f in admin.list_offsets(specs).items()}
    assert results[0].offset == 0
    # 6500 is first reached by 9000, at offset 2; the answer carries that record's timestamp.
    assert (results[1].offset, results[1].timestamp) == (2, base + 9000)
    latest = admin.list_offsets({TopicPartition(topic, 1): OffsetSpec.latest()})
    assert next(iter(latest.values())).result(TIMEOUT_S).offset == 10


def test_seeks_consume_from_the_right_place(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, base = _timed_topic(bootstrap)
    tp = TopicPartition(topic, 0)
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert [r.offset for r in _consume(consumer, 3)] == [0, 1, 2]
        consumer.seek(TopicPartition(topic, 0, 7))
        assert [r.offset for r in _consume(consumer, 3)] == [7, 8, 9]
        consumer.seek(TopicPartition(topic, 0, OFFSET_BEGINNING))
        assert _consume(consumer, 1)[0].value == b"p0-0"
        [found] = consumer.offsets_for_times([TopicPartition(topic, 0, base + 4000)], TIMEOUT_S)
        consumer.seek(found)
        assert _consume(consumer, 1)[0].value == b"p0-4"
        consumer.seek(TopicPartition(topic, 0, OFFSET_END))
        assert consumer.consume(num_messages=1, timeout=0.5) == []
        produce(bootstrap, topic, [Message(0, None, b"after-end", (), base)])
        [record] = _consume(consumer, 1)
        assert (record.offset, record.value) == (10, b"after-end")
        assert consumer.position([tp])[0].offset == 11
    finally:
        consumer.close()
