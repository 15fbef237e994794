"""Per-topic configuration, under Kafka's names.

:class:`TopicConfig` is a frozen value; ``TopicConfig.from_kafka({"retention.ms": "1000"})``
reads Kafka-named string settings (as DescribeConfigs and AlterConfigs carry them) and
``to_kafka()`` writes them back.

Durability is set by ``flush.ms``: ``0`` (the default) fsyncs before an append is
acknowledged, with concurrent appends sharing one fsync; ``N > 0`` fsyncs at most every N ms;
``-1`` (or Kafka's own default, Long.MAX_VALUE) leaves flushing to the operating system.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidConfigError

__all__ = ["FLUSH_BY_OS", "FLUSH_EVERY_APPEND", "NO_EFFECT_CONFIGS", "TopicConfig"]

FLUSH_EVERY_APPEND = 0
FLUSH_BY_OS = -1
_LONG_MAX = (1 << 63) - 1

# Kafka topic configs about replication, which one node without replicas has nothing to do
# with. Accepted so that tools and frameworks that set them (min.insync.replicas, above all)
# work, and dropped: they are never stored or reported.
NO_EFFECT_CONFIGS = frozenset({
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
    "message.downconversion.enable",
    "preallocate",
})

_CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
_TIMESTAMP_TYPES = ("CreateTime", "LogAppendTime")


@dataclass(frozen=True, slots=True)
class TopicConfig:
    retention_ms: int = 7 * 24 * 3600 * 1000  # -1: keep forever
    retention_bytes: int = -1  # per partition; -1: no limit
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    cleanup_policy: str = "delete"
    max_message_bytes: int = 1_048_588
    message_timestamp_type: str = "CreateTime"
    delete_retention_ms: int = 24 * 3600 * 1000
    min_cleanable_dirty_ratio: float = 0.5
    flush_ms: int = FLUSH_EVERY_APPEND
    index_interval_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.cleanup_policy not in _CLEANUP_POLICIES:
            raise InvalidConfigError(
                f"cleanup.policy={self.cleanup_policy!r}; expected one of {_CLEANUP_POLICIES}"
            )
        if self.message_timestamp_type not in _TIMESTAMP_TYPES:
            raise InvalidConfigError(
                f"message.timestamp.type={self.message_timestamp_type!r}; "
                f"expected one of {_TIMESTAMP_TYPES}"
            )
        if not 14 <= self.segment_bytes <= (1 << 31) - 1:
            raise InvalidConfigError(f"segment.bytes={self.segment_bytes}; 14 to 2^31-1")
        if self.max_message_bytes < 0:
            raise InvalidConfigError("max.message.bytes must be ≥ 0")
        if not 0 <= self.min_cleanable_dirty_ratio <= 1:
            raise InvalidConfigError("min.cleanable.dirty.ratio must be within 0 and 1")
        for name in ("segment_ms", "delete_retention_ms", "index_interval_bytes"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(f"{_kafka_name(name)} must be ≥ 0")
        if self.retention_ms < -1 or self.retention_bytes < -1 or self.flush_ms < -1:
            raise InvalidConfigError("retention.ms, retention.bytes and flush.ms must be ≥ -1")

    @property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def delete(self) -> bool:
        return "delete" in self.cleanup_policy

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"

    @property
    def flush_every_append(self) -> bool:
        return self.flush_ms == FLUSH_EVERY_APPEND

    @property
    def flush_by_os(self) -> bool:
        return self.flush_ms == FLUSH_BY_OS

    @classmethod
    def from_kafka(
        cls, settings: Mapping[str, Any], base: TopicConfig | None = None
    ) -> TopicConfig:
        """A config from Kafka-named settings, over ``base`` (the defaults if None)."""
        return (base or cls()).with_changes(settings)

    def with_changes(self, settings: Mapping[str, Any]) -> TopicConfig:
        fields = {field.name: field for field in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in settings.items():
            name = key.replace(".", "_")
            if name not in fields:
                raise InvalidConfigError(f"unknown topic config {key!r}")
            changes[name] = _parse(key, raw, fields[name].type)
        if changes.get("flush_ms") == _LONG_MAX:
            changes["flush_ms"] = FLUSH_BY_OS
        if "cleanup_policy" in changes:  # a list in Kafka: "delete,compact" is valid too
            policies = sorted(set(changes["cleanup_policy"].split(",")))
            changes["cleanup_policy"] = ",".join(policies)
        return dataclasses.replace(self, **changes)

    def to_kafka(self) -> dict[str, str]:
        return {
            _kafka_name(field.name): str(getattr(self, field.name))
            for field in dataclasses.fields(self)
        }


def _kafka_name(name: str) -> str:
    return name.replace("_", ".")


def _parse(key: str, raw: Any, kind: Any) -> Any:
    kind_name = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind_name == "int":
            return int(raw)
        if kind_name == "float":
            return float(raw)
        return str(raw).replace(" ", "")
    except (TypeError, ValueError):
        raise InvalidConfigError(f"{key}={raw!r} is not a valid {kind_name}") from None
