"""kafka-python against a real ``streamer broker`` subprocess."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType
from kafka.codec import has_lz4, has_snappy, has_zstd
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import (
    InvalidConfigurationError,
    InvalidPartitionsError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import OffsetAndMetadata

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
TIMEOUT_MS = int(TIMEOUT_S * 1000)
DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)
# kafka-python 3.0.12 drops a JoinGroup/SyncGroup answer that arrives after the poll() that
# started it timed out: the member then owns nothing while the group is Stable and the
# coordinator counts it as owning its partitions, which nobody consumes until the next
# rebalance. Seen here about once in ten two-member joins with poll(timeout_ms=100) and the
# default 3 s heartbeat (when a join waits for the other member's heartbeat); polls longer
# than a join phase keep clear of it.
GROUP_POLL_TIMEOUT_MS = 1000

# kafka-python compresses with optional modules; without one it cannot produce the codec.
CODEC_MODULES = {"gzip": (lambda: True, "gzip"), "snappy": (has_snappy, "python-snappy"),
                 "lz4": (has_lz4, "lz4"), "zstd": (has_zstd, "zstandard")}


# -- client plumbing ---------------------------------------------------------------------


def _admin(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)


def _create_topic(bootstrap: str, topic: str, partitions: int, **config: str) -> None:
    admin = _admin(bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "configs": config}})
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, messages: Sequence[Message], **config: Any) -> None:
    """Send ``messages`` in order and wait until each is acknowledged without error."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **{"linger_ms": 5, **config})
    try:
        futures = [
            producer.send(topic, value=m.value, key=m.key, partition=m.partition,
                          timestamp_ms=m.timestamp_ms, headers=list(m.headers))
            for m in messages
        ]
        producer.flush(TIMEOUT_S)
        for future in futures:
            future.get(TIMEOUT_S)
    finally:
        producer.close(TIMEOUT_S)


def _consumer(bootstrap: str, **config: Any) -> KafkaConsumer:
    settings: dict[str, Any] = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    return KafkaConsumer(bootstrap_servers=bootstrap, **{**settings, **config})


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


def _consume(consumer: KafkaConsumer, count: int) -> list[Received]:
    """The next ``count`` records; fails if they do not come within the timeout."""
    records: list[Received] = []

    def more() -> bool:
        batches = consumer.poll(timeout_ms=200, max_records=count - len(records))
        records.extend(_received(r) for rs in batches.values() for r in rs)
        return len(records) >= count

    wait_until(more, TIMEOUT_S, f"{count} records consumed", lambda: f"got {len(records)}")
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


def _read_all(bootstrap: str, topic: str, partitions: int) -> list[Received]:
    """Every record of the topic, from the start of each partition to its high watermark."""
    consumer = _consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        consumer.seek_to_beginning()
        return _consume(consumer, sum(ends[tp] - starts[tp] for tp in tps))
    finally:
        consumer.close()


# -- round trips -------------------------------------------------------------------------


def test_round_trip_keys_headers_timestamps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("round-trip")
    _create_topic(bootstrap, topic, 4)
    # kafka-python refuses to send a header without a value, and a record with neither key
    # nor value ("Need at least one: key or value").
    sent = varied_messages(4, 600, null_header_values=False, null_key_and_value=False)
    produce(bootstrap, topic, sent)
    check_round_trip(sent, _read_all(bootstrap, topic, 4))


@pytest.mark.parametrize("codec", CODECS)
def test_compression_round_trip(module_broker: BrokerProcess, codec: str) -> None:
    available, module = CODEC_MODULES[codec]
    if not available():
        pytest.skip(f"kafka-python cannot produce {codec} here: its optional module "
                    f"{module!r} is not installed")
    bootstrap = module_broker.bootstrap
    topic = unique_name(f"codec-{codec}")
    _create_topic(bootstrap, topic, 1)
    sent = codec_messages(500)
    produce(bootstrap, topic, sent, compression_type=codec, linger_ms=50)
    check_round_trip(sent, _read_all(bootstrap, topic, 1))
    # The broker finds a record inside a compressed batch: it decompresses the client's codec.
    consumer = _consumer(bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        assert consumer.offsets_for_times({tp: sent[250].timestamp_ms})[tp].offset == 250
    finally:
        consumer.close()


def test_log_append_time_topic_stamps_records(module_broker: BrokerProcess) -> None:
    """``message.timestamp.type=LogAppendTime``: the broker's clock replaces the producer's
    timestamps (and recomputes the batch CRC, which the consumer checks)."""
    bootstrap = module_broker.bootstrap
    topic = unique_name("log-append-time")
    _create_topic(bootstrap, topic, 1, **{"message.timestamp.type": "LogAppendTime"})
    sent = varied_messages(1, 50, null_header_values=False, null_key_and_value=False)
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
    with pytest.raises(MessageSizeTooLargeError):
        produce(bootstrap, topic, [Message(0, None, b"x" * 5000, (), hour_ago_ms())])
    produce(bootstrap, topic, [Message(0, None, b"small", (), hour_ago_ms())])
    assert [r.value for r in _read_all(bootstrap, topic, 1)] == [b"small"]


# -- consumer groups ---------------------------------------------------------------------


@pytest.mark.parametrize("assignor", ["roundrobin", "cooperative-sticky"])
def test_group_of_three_rebalances_on_join_leave_and_death(
    module_broker: BrokerProcess, tmp_path: Path, assignor: str
) -> None:
    bootstrap = module_broker.bootstrap
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    topics: list[str] = []

    def send(batch: Sequence[tuple[int, str]]) -> None:
        futures = [producer.send(topics[0], value=value.encode(), partition=partition)
                   for partition, value in batch]
        for future in futures:
            future.get(TIMEOUT_S)

    def create(topic: str, partitions: int) -> None:
        topics.append(topic)
        _create_topic(bootstrap, topic, partitions)

    try:
        timings = three_member_group("kafka-python", bootstrap, assignor, send, tmp_path,
                                     create)
    finally:
        producer.close(TIMEOUT_S)
    print("rebalance seconds:", {what: round(s, 2) for what, s in timings.items()})


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_committed_offsets_resume_after_broker_and_consumer_restart(
    broker: BrokerProcess, how: str
) -> None:
    topic, group = unique_name("resume"), unique_name("resume-group")
    _create_topic(broker.bootstrap, topic, 3)
    produce(broker.bootstrap, topic, [
        Message(i % 3, None, f"before-{i}".encode(), (), hour_ago_ms() + i) for i in range(30)
    ])
    commit_at = {0: 4, 1: 7, 2: 10}  # p2: everything
    tps = [TopicPartition(topic, p) for p in range(3)]

    def group_consumer(bootstrap: str) -> KafkaConsumer:
        return _consumer(bootstrap, group_id=group, heartbeat_interval_ms=500,
                         partition_assignment_strategy=(RangePartitionAssignor,))

    consumer = group_consumer(broker.bootstrap)
    consumer.subscribe([topic])
    assert len(_consume(consumer, 30)) == 30
    consumer.commit({tp: OffsetAndMetadata(commit_at[tp.partition], f"meta-{tp.partition}", -1)
                     for tp in tps})
    consumer.close()

    stop_broker(broker, how)
    broker = broker.restart()
    try:
        produce(broker.bootstrap, topic, [
            Message(i % 3, None, f"after-{i}".encode(), (), hour_ago_ms() + i) for i in range(15)
        ])
        expected = {(p, offset) for p in range(3) for offset in range(commit_at[p], 15)}
        checker = group_consumer(broker.bootstrap)
        committed = {tp.partition: checker.committed(tp, metadata=True) for tp in tps}
        checker.close()
        assert {p: c.offset for p, c in committed.items()} == commit_at
        assert {p: c.metadata for p, c in committed.items()} == {p: f"meta-{p}" for p in range(3)}

        # Two members, each on a thread of its own as an application runs them (a
        # KafkaConsumer.poll can wait on a rebalance that needs the other member to poll).
        seen: list[tuple[int, int]] = []
        uncommitted: set[tuple[int, int]] = set()
        lock, stop = threading.Lock(), threading.Event()

        def member() -> None:
            consumer = group_consumer(broker.bootstrap)
            consumer.subscribe([topic])
            try:
                while not stop.is_set():
                    polled = consumer.poll(timeout_ms=GROUP_POLL_TIMEOUT_MS)
                    for tp, records in polled.items():
                        for record in records:
                            with lock:
                                seen.append((tp.partition, record.offset))
                            try:
                                consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                            except KafkaError:
                                with lock:
                                    uncommitted.add((tp.partition, record.offset))
            finally:
                consumer.close()

        threads = [threading.Thread(target=member) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: set(seen) >= expected, TIMEOUT_S,
                       "every uncommitted record consumed",
                       lambda: f"missing {sorted(expected - set(seen))}")
        finally:
            stop.set()
            for thread in threads:
                thread.join(TIMEOUT_S)
        assert set(seen) == expected, f"re-delivered {sorted(set(seen) - expected)}"
        duplicates = [item for item, n in Counter(seen).items() if n > 1]
        assert set(duplicates) <= uncommitted, f"delivered twice: {duplicates}"
    finally:
        broker.kill()


# -- idempotent producers ----------------------------------------------------------------


IDEMPOTENT = {"enable_idempotence": True, "acks": "all",
              "max_in_flight_requests_per_connection": 5, "batch_size": 4096}


def test_idempotent_producer_no_duplicates_no_gaps(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic = unique_name("idempotent")
    _create_topic(bootstrap, topic, 3)
    sent = [Message(i % 3, None, f"{i}".encode(), (), hour_ago_ms()) for i in range(5_000)]
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
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=2,
                             retry_backoff_ms=50, reconnect_backoff_ms=50,
                             reconnect_backoff_max_ms=500, delivery_timeout_ms=60_000,
                             **IDEMPOTENT)
    total = 10_000
    first = 6_000
    restarted = broker
    try:
        futures = [producer.send(topic, value=str(i).encode(), partition=i % 3)
                   for i in range(first)]
        wait_until(lambda: sum(f.is_done for f in futures) >= first // 2, TIMEOUT_S,
                   "half of the first messages delivered")
        # The rest is sent just before the broker stops, so whatever the machine's speed,
        # requests are in flight or queued when it goes away (the first ones may all be done).
        futures += [producer.send(topic, value=str(i).encode(), partition=i % 3)
                    for i in range(first, total)]
        assert not all(f.is_done for f in futures), "nothing left in flight to retry"
        stop_broker(broker, how)
        restarted = broker.restart()
        producer.flush(60)
        outcomes = []
        for i, future in enumerate(futures):
            try:
                future.get(0)
                outcomes.append((i, None))
            except KafkaError as error:
                outcomes.append((i, error))
        values = [int(r.value) for r in _read_all(restarted.bootstrap, topic, 3) if r.value]
    finally:
        producer.close(5)
        restarted.kill()

    succeeded = [i for i, error in outcomes if error is None]
    failed = [(i, error) for i, error in outcomes if error is not None]
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


def _describe(admin: KafkaAdminClient, topic: str) -> dict[str, dict[str, Any]]:
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                       config_filter="all")
    entries: dict[str, dict[str, Any]] = described["topic"][topic]
    return entries


def test_topic_admin(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    admin = _admin(bootstrap)
    topic = unique_name("admin")
    try:
        _create_topic(bootstrap, topic, 2, **TOPIC_CONFIG)
        assert topic in admin.list_topics()
        [described] = admin.describe_topics([topic])
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1]

        entries = _describe(admin, topic)
        for name, value in TOPIC_CONFIG.items():
            assert entries[name]["value"] == value, name
            assert entries[name]["config_source"] == "DYNAMIC_TOPIC_CONFIG", name
        assert entries["flush.ms"]["config_source"] == "DEFAULT_CONFIG"

        # AlterConfigs replaces the whole set: what it does not name goes back to default.
        # (kafka-python fills in the other modified settings first, as its docs say.)
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"retention.ms": "7200000"})],
            incremental=False)
        assert result == {"topic": {topic: "OK"}}
        entries = _describe(admin, topic)
        assert entries["retention.ms"]["value"] == "7200000"
        assert entries["cleanup.policy"]["value"] == "compact"  # kept by the client

        # IncrementalAlterConfigs: set one, delete another, leave the rest.
        result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {
            "cleanup.policy": (AlterConfigOp.SET, "delete"),
            "retention.ms": (AlterConfigOp.DELETE, None),
        })], incremental=True)
        assert result == {"topic": {topic: "OK"}}
        entries = _describe(admin, topic)
        assert entries["cleanup.policy"]["value"] == "delete"
        assert entries["retention.ms"]["value"] == DEFAULT_RETENTION_MS
        assert entries["retention.ms"]["config_source"] == "DEFAULT_CONFIG"
        assert entries["segment.bytes"]["value"] == "1048576"

        admin.create_partitions({topic: 4})
        [described] = admin.describe_topics([topic])
        assert sorted(p["partition_index"] for p in described["partitions"]) == [0, 1, 2, 3]
        produce(bootstrap, topic, [
            Message(3, b"k", f"on-new-partition-{i}".encode(), (), hour_ago_ms() + i)
            for i in range(10)
        ])

        tp = TopicPartition(topic, 3)
        deleted = admin.delete_records({tp: 6})
        assert deleted[tp]["low_watermark"] == 6
        consumer = _consumer(bootstrap)
        consumer.assign([tp])
        assert consumer.beginning_offsets([tp]) == {tp: 6}
        assert consumer.end_offsets([tp]) == {tp: 10}
        consumer.seek_to_beginning()
        assert [r.offset for r in _consume(consumer, 4)] == [6, 7, 8, 9]
        consumer.close()

        admin.delete_topics([topic])
        assert topic not in admin.list_topics()
    finally:
        admin.close()


def test_topic_admin_errors(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    admin = _admin(bootstrap)
    topic = unique_name("admin-errors")
    try:
        _create_topic(bootstrap, topic, 1)
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic: {"num_partitions": 1}})

        bad = unique_name("bad-config")
        with pytest.raises(InvalidConfigurationError):
            admin.create_topics({bad: {"num_partitions": 1,
                                       "configs": {"cleanup.policy": "sometimes"}}})
        assert bad not in admin.list_topics()

        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([unique_name("never-created")])

        with pytest.raises(InvalidPartitionsError):
            admin.create_partitions({topic: 1})

        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"segment.bytes": "x"})],
            incremental=False)
        assert "InvalidConfigurationError" in result["topic"][topic]
    finally:
        admin.close()


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
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = _consumer(bootstrap)
    try:
        assert consumer.beginning_offsets([p0, p1]) == {p0: 0, p1: 0}
        assert consumer.end_offsets([p0, p1]) == {p0: 10, p1: 10}

        def lookup(tp: TopicPartition, timestamp_ms: int) -> tuple[int, int] | None:
            found = consumer.offsets_for_times({tp: timestamp_ms})[tp]
            return None if found is None else (found.offset, found.timestamp)

        assert lookup(p0, base - 1) == (0, base)
        assert lookup(p0, base) == (0, base)
        assert lookup(p0, base + 2500) == (3, base + 3000)
        assert lookup(p0, base + 9000) == (9, base + 9000)
        assert lookup(p0, base + 9001) is None  # every record is older
        # Out of order: the first offset whose timestamp reaches the target.
        assert lookup(p1, base + 8500) == (2, base + 9000)
        assert lookup(p1, base + 4000) == (0, base + 5000)
        assert lookup(p1, base + 9500) is None
    finally:
        consumer.close()


def test_seeks_consume_from_the_right_place(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, base = _timed_topic(bootstrap)
    tp = TopicPartition(topic, 0)
    consumer = _consumer(bootstrap)
    try:
        consumer.assign([tp])
        assert [r.offset for r in _consume(consumer, 3)] == [0, 1, 2]
        consumer.seek(tp, 7)
        assert [r.offset for r in _consume(consumer, 3)] == [7, 8, 9]
        consumer.seek_to_beginning(tp)
        assert _consume(consumer, 1)[0].value == b"p0-0"
        found = consumer.offsets_for_times({tp: base + 4000})[tp]
        consumer.seek(tp, found.offset)
        assert _consume(consumer, 1)[0].value == b"p0-4"
        consumer.seek_to_end(tp)
        assert consumer.position(tp) == 10
        assert consumer.poll(timeout_ms=300) == {}
        produce(bootstrap, topic, [Message(0, None, b"after-end", (), base)])
        [record] = _consume(consumer, 1)
        assert (record.offset, record.value) == (10, b"after-end")
        assert consumer.position(tp) == 11
    finally:
        consumer.close()
