"""TopicConfig: Kafka-named settings in and out, defaults, and refused values."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from streamer.log import FLUSH_BY_OS, FLUSH_EVERY_APPEND, InvalidConfigError, TopicConfig


def test_defaults_under_kafka_names() -> None:
    assert TopicConfig().to_kafka() == {
        "retention.ms": "604800000",
        "retention.bytes": "-1",
        "segment.bytes": "1073741824",
        "segment.ms": "604800000",
        "cleanup.policy": "delete",
        "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime",
        "delete.retention.ms": "86400000",
        "min.cleanable.dirty.ratio": "0.5",
        "flush.ms": "0",
        "index.interval.bytes": "4096",
    }


def test_from_kafka_reads_strings_and_numbers() -> None:
    config = TopicConfig.from_kafka(
        {
            "retention.ms": "1000",
            "retention.bytes": 5000,
            "segment.bytes": " 2048 ",
            "cleanup.policy": "compact",
            "message.timestamp.type": "LogAppendTime",
            "min.cleanable.dirty.ratio": "0.25",
            "flush.ms": "-1",
        }
    )
    assert config.retention_ms == 1000
    assert config.retention_bytes == 5000
    assert config.segment_bytes == 2048
    assert config.cleanup_policy == "compact"
    assert config.min_cleanable_dirty_ratio == 0.25
    assert config.flush_ms == FLUSH_BY_OS
    assert config.compact and not config.delete
    assert config.log_append_time
    assert config.flush_by_os and not config.flush_every_append
    assert config.segment_ms == TopicConfig().segment_ms  # untouched settings keep defaults


@pytest.mark.parametrize(
    "config",
    [
        TopicConfig(),
        TopicConfig(retention_ms=-1, retention_bytes=10, cleanup_policy="compact,delete"),
        TopicConfig(segment_bytes=14, segment_ms=0, flush_ms=FLUSH_BY_OS),
        TopicConfig(message_timestamp_type="LogAppendTime", min_cleanable_dirty_ratio=0.0),
        TopicConfig(min_cleanable_dirty_ratio=1.0, delete_retention_ms=0, flush_ms=250),
        TopicConfig(max_message_bytes=0, index_interval_bytes=0),
    ],
)
def test_round_trip(config: TopicConfig) -> None:
    kafka = config.to_kafka()
    assert all(isinstance(value, str) for value in kafka.values())
    assert TopicConfig.from_kafka(kafka) == config


def test_from_kafka_over_a_base() -> None:
    base = TopicConfig(retention_ms=5, cleanup_policy="compact")
    config = TopicConfig.from_kafka({"retention.bytes": "7"}, base)
    assert (config.retention_ms, config.retention_bytes, config.cleanup_policy) == (5, 7, "compact")
    assert base.retention_bytes == -1  # frozen values: the base is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.retention_ms = 6  # type: ignore[misc]


def test_kafkas_long_max_flush_means_flush_by_os() -> None:
    config = TopicConfig.from_kafka({"flush.ms": str((1 << 63) - 1)})
    assert config.flush_ms == FLUSH_BY_OS
    assert TopicConfig.from_kafka({"flush.ms": "0"}).flush_ms == FLUSH_EVERY_APPEND


@pytest.mark.parametrize(
    ("policy", "stored"),
    [
        ("delete", "delete"),
        ("compact", "compact"),
        ("compact,delete", "compact,delete"),
        ("compact, delete", "compact,delete"),
        ("delete,compact", "compact,delete"),  # a list in Kafka: any order
    ],
)
def test_cleanup_policy_lists(policy: str, stored: str) -> None:
    config = TopicConfig.from_kafka({"cleanup.policy": policy})
    assert config.cleanup_policy == stored
    assert config.compact == ("compact" in policy)
    assert config.delete == ("delete" in policy)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"retention.hours": "1"}, "unknown topic config 'retention.hours'"),
        ({"retention.ms": "soon"}, "retention.ms='soon' is not a valid int"),
        ({"retention.ms": "1.5"}, "not a valid int"),
        ({"retention.ms": None}, "not a valid int"),
        ({"min.cleanable.dirty.ratio": "half"}, "not a valid float"),
        ({"retention.ms": "-2"}, "retention.ms"),
        ({"retention.bytes": "-2"}, "retention.bytes"),
        ({"flush.ms": "-2"}, "flush.ms"),
        ({"segment.bytes": "13"}, "segment.bytes=13"),
        ({"segment.bytes": str(1 << 31)}, "segment.bytes"),
        ({"segment.ms": "-1"}, "segment.ms"),
        ({"delete.retention.ms": "-1"}, "delete.retention.ms"),
        ({"index.interval.bytes": "-1"}, "index.interval.bytes"),
        ({"max.message.bytes": "-1"}, "max.message.bytes"),
        ({"min.cleanable.dirty.ratio": "1.5"}, "min.cleanable.dirty.ratio"),
        ({"min.cleanable.dirty.ratio": "-0.1"}, "min.cleanable.dirty.ratio"),
        ({"min.cleanable.dirty.ratio": "nan"}, "min.cleanable.dirty.ratio"),
        ({"cleanup.policy": "forever"}, "cleanup.policy='forever'"),
        ({"cleanup.policy": ""}, "cleanup.policy"),
        ({"message.timestamp.type": "AppendTime"}, "message.timestamp.type"),
    ],
)
def test_bad_values_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message.replace(".", r"\.")) as raised:
        TopicConfig.from_kafka(settings)
    assert raised.value.kafka_error_code == 40


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(InvalidConfigError):
        TopicConfig(segment_bytes=0)
    with pytest.raises(InvalidConfigError):
        TopicConfig(cleanup_policy="none")
