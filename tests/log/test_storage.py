"""The Log: topics and partitions, their configs, reopening, and statistics snapshots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamer.log import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    Log,
    LogStatistics,
    LogStorageError,
    ManualClock,
    MemoryFilesystem,
    PartitionStatistics,
    RecordTooLargeError,
    TopicConfig,
    TopicExistsError,
    UnknownTopicOrPartitionError,
)
from streamer.log.storage import _DELETED_PREFIX

from .batches import ROOT, build_batch, idempotent_batch, read_all


def test_create_topic(log: Log, fs: MemoryFilesystem) -> None:
    info = log.create_topic("orders", 3, {"retention.ms": 1000, "cleanup.policy": "compact"})
    assert info.name == "orders"
    assert info.partitions == 3
    assert info.overrides == {"retention.ms": "1000", "cleanup.policy": "compact"}
    assert info.config.retention_ms == 1000
    assert info.config.compact
    assert log.topic("orders") == info
    assert log.has_topic("orders")
    assert log.topic_names() == ["orders"]
    for p in range(3):
        partition = log.partition("orders", p)
        assert (partition.topic, partition.partition) == ("orders", p)
        assert partition.config == info.config
        assert fs.exists(f"{ROOT}/topics/orders/{p}/00000000000000000000.log")
    assert fs.exists(f"{ROOT}/topics/orders/topic.json")


def test_partitions_are_independent(log: Log) -> None:
    log.create_topic("t", 2)
    log.partition("t", 0).append(build_batch(3))
    log.partition("t", 1).append(build_batch(1))
    assert log.partition("t", 0).log_end_offset == 3
    assert log.partition("t", 1).log_end_offset == 1
    assert log.partition("t", 1).append(build_batch(1)).base_offset == 1


def test_topic_already_exists(log: Log) -> None:
    log.create_topic("t", 1)
    log.partition("t", 0).append(build_batch(2))
    with pytest.raises(TopicExistsError, match="'t' already exists") as raised:
        log.create_topic("t", 4)
    assert raised.value.kafka_error_code == 36
    assert log.topic("t").partitions == 1
    assert log.partition("t", 0).log_end_offset == 2


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "a b", "ü", "x" * 250, "tab\t", "semi;colon", "../escape"],
)
def test_invalid_topic_names(log: Log, fs: MemoryFilesystem, name: str) -> None:
    with pytest.raises(InvalidTopicError) as raised:
        log.create_topic(name)
    assert raised.value.kafka_error_code == 17
    assert log.topic_names() == []
    assert fs.listdir(f"{ROOT}/topics") == []


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "x" * 249, "...", "_internal", "0"])
def test_valid_topic_names(log: Log, name: str) -> None:
    log.create_topic(name)
    assert log.topic_names() == [name]


@pytest.mark.parametrize("partitions", [0, -1, 10_001])
def test_invalid_partition_count(log: Log, partitions: int) -> None:
    with pytest.raises(InvalidPartitionsError) as raised:
        log.create_topic("t", partitions)
    assert raised.value.kafka_error_code == 37
    assert not log.has_topic("t")


def test_invalid_config_creates_nothing(log: Log, fs: MemoryFilesystem) -> None:
    with pytest.raises(InvalidConfigError):
        log.create_topic("t", 1, {"retention.ms": "never"})
    with pytest.raises(InvalidConfigError):
        log.create_topic("t", 1, {"no.such.setting": "1"})
    assert not log.has_topic("t")
    assert fs.listdir(f"{ROOT}/topics") == []


def test_unknown_topic_or_partition(log: Log) -> None:
    log.create_topic("t", 2)
    with pytest.raises(UnknownTopicOrPartitionError, match="unknown topic 'nope'") as raised:
        log.partition("nope", 0)
    assert raised.value.kafka_error_code == 3
    with pytest.raises(UnknownTopicOrPartitionError, match="no partition 2"):
        log.partition("t", 2)
    with pytest.raises(UnknownTopicOrPartitionError):
        log.partition("t", -1)
    with pytest.raises(UnknownTopicOrPartitionError):
        log.topic("nope")
    with pytest.raises(UnknownTopicOrPartitionError):
        log.delete_topic("nope")
    with pytest.raises(UnknownTopicOrPartitionError):
        log.alter_config("nope", {})
    with pytest.raises(UnknownTopicOrPartitionError):
        log.create_partitions("nope", 3)


def test_delete_topic(log: Log, fs: MemoryFilesystem, clock: ManualClock) -> None:
    log.create_topic("gone", 2)
    log.create_topic("kept", 1)
    log.partition("gone", 0).append(build_batch(3))
    log.partition("kept", 0).append(build_batch(1))
    log.delete_topic("gone")
    assert log.topic_names() == ["kept"]
    assert not log.has_topic("gone")
    assert fs.listdir(f"{ROOT}/topics") == ["kept"]
    with pytest.raises(UnknownTopicOrPartitionError):
        log.partition("gone", 0)
    # A new topic of the same name starts empty.
    log.create_topic("gone", 1)
    assert log.partition("gone", 0).log_end_offset == 0
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic_names() == ["gone", "kept"]
        assert reopened.partition("gone", 0).log_end_offset == 0
        assert reopened.partition("kept", 0).log_end_offset == 1


def test_an_interrupted_delete_is_finished_on_open(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1)
    log.partition("t", 0).append(build_batch(1))
    log.close()
    graveyard = f"{ROOT}/topics/{_DELETED_PREFIX}t-0123abcd"
    fs.rename(f"{ROOT}/topics/t", graveyard)  # as if the delete crashed before its rmtree
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic_names() == []
        assert fs.listdir(f"{ROOT}/topics") == []


def test_topic_names_cannot_collide_with_deleted_topics(
    log: Log, fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log.create_topic(".deleted-orders")  # a valid Kafka topic name
    log.partition(".deleted-orders", 0).append(build_batch(2))
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic_names() == [".deleted-orders"]
        assert reopened.partition(".deleted-orders", 0).log_end_offset == 2


def test_create_partitions(log: Log, fs: MemoryFilesystem, clock: ManualClock) -> None:
    log.create_topic("t", 2, {"retention.ms": 5000})
    log.partition("t", 0).append(build_batch(2))
    info = log.create_partitions("t", 5)
    assert info.partitions == 5
    assert log.topic("t").partitions == 5
    for p in range(2, 5):
        partition = log.partition("t", p)
        assert partition.config.retention_ms == 5000
        assert partition.append(build_batch(1)).base_offset == 0
    assert log.partition("t", 0).log_end_offset == 2
    for total in (5, 4, 10_001):
        with pytest.raises(InvalidPartitionsError):
            log.create_partitions("t", total)
    assert log.topic("t").partitions == 5
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic("t").partitions == 5
        assert [reopened.partition("t", p).log_end_offset for p in range(5)] == [2, 0, 1, 1, 1]


def test_alter_config(log: Log, fs: MemoryFilesystem, clock: ManualClock) -> None:
    log.create_topic("t", 2, {"retention.ms": 1000, "segment.bytes": 5000})
    info = log.alter_config("t", {"retention.ms": "2000", "cleanup.policy": "compact"})
    assert info.overrides == {
        "retention.ms": "2000",
        "segment.bytes": "5000",
        "cleanup.policy": "compact",
    }
    assert info.config.retention_ms == 2000
    assert info.config.segment_bytes == 5000
    for p in range(2):
        assert log.partition("t", p).config == info.config
    replaced = log.alter_config("t", {"max.message.bytes": 100}, replace=True)
    assert replaced.overrides == {"max.message.bytes": "100"}
    assert replaced.config == TopicConfig(max_message_bytes=100)
    assert log.partition("t", 1).config.max_message_bytes == 100
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic("t").overrides == {"max.message.bytes": "100"}
        assert reopened.partition("t", 0).config.max_message_bytes == 100


def test_alter_config_takes_effect_on_appends(log: Log) -> None:
    log.create_topic("t")
    partition = log.partition("t", 0)
    partition.append(build_batch(3))
    log.alter_config("t", {"max.message.bytes": "10"})
    with pytest.raises(RecordTooLargeError):
        partition.append(build_batch(1))
    log.alter_config("t", {"segment.bytes": "14", "max.message.bytes": "1000"})
    partition.append(build_batch(1))
    assert len(partition.segments) == 2  # the tiny segment.bytes rolled at once


def test_invalid_alter_config_changes_nothing(
    log: Log, fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log.create_topic("t", 1, {"retention.ms": 1000})
    with pytest.raises(InvalidConfigError):
        log.alter_config("t", {"retention.ms": "-5"})
    with pytest.raises(InvalidConfigError):
        log.alter_config("t", {"bogus": "1"})
    assert log.topic("t").overrides == {"retention.ms": "1000"}
    assert log.partition("t", 0).config.retention_ms == 1000
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert reopened.topic("t").overrides == {"retention.ms": "1000"}


def test_reopen_keeps_topics_and_data(fs: MemoryFilesystem, clock: ManualClock) -> None:
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        log.create_topic("a", 2, {"segment.bytes": 200})
        log.create_topic("b", 1, {"cleanup.policy": "compact"})
        for i in range(5):
            log.partition("a", i % 2).append(build_batch(2))
        log.partition("b", 0).append(idempotent_batch(2, sequence=0))
        expected = {name: read_all(log.partition(name, 0)) for name in ("a", "b")}
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        assert log.topic_names() == ["a", "b"]
        assert log.topic("a").config.segment_bytes == 200
        assert log.topic("b").config.compact
        assert [log.partition("a", p).log_end_offset for p in (0, 1)] == [6, 4]
        assert {name: read_all(log.partition(name, 0)) for name in ("a", "b")} == expected
        assert log.partition("b", 0).append(idempotent_batch(2, sequence=0)).duplicate


def test_reopen_on_disk(tmp_path: Path, clock: ManualClock) -> None:
    with Log.open(tmp_path / "data", clock=clock) as log:
        log.create_topic("t", 3)
        log.partition("t", 2).append(build_batch(4))
    assert sorted(p.name for p in (tmp_path / "data" / "topics" / "t").iterdir()) == [
        "0",
        "1",
        "2",
        "topic.json",
    ]
    with Log.open(tmp_path / "data", clock=clock) as log:
        assert log.topic("t").partitions == 3
        assert log.partition("t", 2).log_end_offset == 4


def test_default_config_applies_under_overrides(fs: MemoryFilesystem, clock: ManualClock) -> None:
    defaults = TopicConfig(retention_ms=42, segment_bytes=1000)
    with Log.open(ROOT, fs=fs, clock=clock, default_config=defaults) as log:
        info = log.create_topic("t", 1, {"segment.bytes": "2000"})
        assert (info.config.retention_ms, info.config.segment_bytes) == (42, 2000)


def test_a_creation_interrupted_before_its_metadata_is_ignored(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    fs.makedirs(f"{ROOT}/topics/half")
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        assert log.topic_names() == []
        log.create_topic("half", 1)
        assert log.partition("half", 0).log_end_offset == 0


def test_close_is_idempotent(fs: MemoryFilesystem, clock: ManualClock) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t")
    log.close()
    log.close()


# -- statistics ---------------------------------------------------------------------------


def test_statistics_snapshots(log: Log, clock: ManualClock) -> None:
    log.create_topic("a", 2, {"segment.bytes": 150, "flush.ms": "-1"})
    log.create_topic("b", 1)
    first = log.partition("a", 0)
    first.append(build_batch(2))
    first.append(build_batch(2))
    first.append(idempotent_batch(1, sequence=0))
    log.partition("b", 0).append(build_batch(5))
    stats = log.statistics()
    assert isinstance(stats, LogStatistics)
    assert stats.root == ROOT
    assert stats.topics == 2
    by_name = {(p.topic, p.partition): p for p in stats.partitions}
    assert set(by_name) == {("a", 0), ("a", 1), ("b", 0)}
    a0 = by_name["a", 0]
    assert isinstance(a0, PartitionStatistics)
    assert (a0.log_start_offset, a0.log_end_offset, a0.high_watermark) == (0, 5, 5)
    assert a0.segments == 3
    assert a0.durable_offset == 4  # flush.ms=-1: only the rolled segments are fsynced
    assert a0.producers == 1
    assert a0.size_bytes == sum(segment.size for segment in first.segments)
    assert by_name["a", 1] == PartitionStatistics("a", 1, 0, 0, 0, 0, 1, 0, 0)
    b0 = by_name["b", 0]
    assert (b0.log_end_offset, b0.durable_offset, b0.segments, b0.producers) == (5, 5, 1, 0)
    assert stats.size_bytes == a0.size_bytes + b0.size_bytes
    # A snapshot: later appends do not change it, and it cannot be changed.
    first.append(build_batch(1))
    assert a0.log_end_offset == 5
    assert first.statistics().log_end_offset == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        a0.log_end_offset = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.topics = 0  # type: ignore[misc]


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[]", b'{"partitions": 0}',
                                    b'{"partitions": 2, "overrides": "x"}'])
def test_damaged_topic_metadata_is_refused_with_a_clear_error(
    tmp_path: Path, damage: bytes
) -> None:
    with Log.open(tmp_path) as log:
        log.create_topic("changelog", 2, {"cleanup.policy": "compact"})
        log.create_topic("other", 1)
    (tmp_path / "topics" / "changelog" / "topic.json").write_bytes(damage)
    with pytest.raises(LogStorageError, match=r"topic\.json is damaged.*'changelog'"):
        Log.open(tmp_path)
    assert (tmp_path / "topics" / "changelog" / "0").is_dir()  # nothing was deleted
