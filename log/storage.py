"""The log as a whole: topics, their partitions and configs, in one folder.

Layout under the root folder::

    topics/<topic>/topic.json      partition count and config overrides
    topics/<topic>/<partition>/    one PartitionLog each (see partition.py)

``Log.open(path)`` is the durable log; ``Log.memory()`` is the same engine over a
:class:`~streamer.log.fs.MemoryFilesystem`, for ``memory://`` apps and tests.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .clock import Clock, SystemClock
from .config import FLUSH_BY_OS, TopicConfig
from .errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    LogError,
    LogStorageError,
    TopicExistsError,
    UnknownTopicOrPartitionError,
)
from .fs import Filesystem, MemoryFilesystem, OsFilesystem, read_json_object, write_json
from .partition import PartitionLog, PartitionStatistics

__all__ = ["Log", "LogStatistics", "TopicInfo", "check_topic_name"]

logger = logging.getLogger("streamer.log")

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# "~" is not allowed in topic names, so no topic (".deleted-x" is a valid one) is ever
# taken for the leftovers of an interrupted delete and wiped on open.
_DELETED_PREFIX = "~deleted-"
PARTITIONS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    config: TopicConfig
    overrides: dict[str, str]  # the settings given for this topic, Kafka-named


@dataclass(frozen=True, slots=True)
class LogStatistics:
    root: str
    topics: int
    partitions: tuple[PartitionStatistics, ...]

    @property
    def size_bytes(self) -> int:
        return sum(partition.size_bytes for partition in self.partitions)


@dataclass
class _Topic:
    info: TopicInfo
    partitions: list[PartitionLog]


class Log:
    """Topics of partitioned, segmented logs under one root folder."""

    def __init__(
        self,
        root: str,
        *,
        fs: Filesystem,
        clock: Clock,
        default_config: TopicConfig,
    ) -> None:
        self.root = root
        self.fs = fs
        self.clock = clock
        self.default_config = default_config
        self._topics: dict[str, _Topic] = {}
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str] = "./streamer-data",
        *,
        fs: Filesystem | None = None,
        clock: Clock | None = None,
        default_config: TopicConfig | None = None,
    ) -> Log:
        """Open (or create) the log in ``root``, recovering every partition."""
        log = cls(
            os.fspath(root),
            fs=fs or OsFilesystem(),
            clock=clock or SystemClock(),
            default_config=default_config or TopicConfig(),
        )
        log._load()
        return log

    @classmethod
    def memory(
        cls, *, clock: Clock | None = None, default_config: TopicConfig | None = None
    ) -> Log:
        """A log held in memory: nothing survives the process; fsync is moot."""
        config = default_config or TopicConfig(flush_ms=FLUSH_BY_OS)
        return cls.open("/memory", fs=MemoryFilesystem(), clock=clock, default_config=config)

    @classmethod
    def open_url(
        cls, url: str, *, clock: Clock | None = None, default_config: TopicConfig | None = None
    ) -> Log:
        """Open a log by broker URL: ``memory://``, ``file://PATH`` or a plain path."""
        if url == "memory://":
            return cls.memory(clock=clock, default_config=default_config)
        if url.startswith("kafka://"):
            raise ValueError(f"{url!r} names a remote broker, not an embedded log")
        path = url.removeprefix("file://")
        return cls.open(path, clock=clock, default_config=default_config)

    # -- topics ---------------------------------------------------------------------------

    def _topics_dir(self) -> str:
        return f"{self.root}/topics"

    def _topic_dir(self, name: str) -> str:
        return f"{self._topics_dir()}/{name}"

    def _load(self) -> None:
        self.fs.makedirs(self._topics_dir())
        for name in self.fs.listdir(self._topics_dir()):
            path = self._topic_dir(name)
            if name.startswith(_DELETED_PREFIX):
                self.fs.rmtree(path)  # a deletion interrupted by a crash
                continue
            meta_path = f"{path}/topic.json"
            if not self.fs.exists(meta_path):
                continue  # a creation interrupted before its metadata was written
            meta = read_json_object(self.fs, meta_path)
            count = meta and meta.get("partitions")
            overrides = meta and meta.get("overrides")
            if type(count) is not int or count < 1 or not isinstance(overrides, dict):
                # Guessing would be worse: a lost cleanup.policy=compact would let retention
                # delete a changelog. The operator restores the file or deletes the topic.
                raise LogStorageError(
                    f"{meta_path} is damaged, so topic {name!r} cannot be opened: restore "
                    f"it (partition count and config overrides) or delete {path}"
                )
            self._open_topic(name, count, overrides)

    def _open_topic(self, name: str, count: int, overrides: dict[str, str]) -> _Topic:
        config = self.default_config.with_changes(overrides)
        partitions = [
            PartitionLog.open(
                self.fs, self.clock, f"{self._topic_dir(name)}/{p}", name, p, config
            )
            for p in range(count)
        ]
        for partition in partitions:
            for note in partition.recovery_notes:  # what opening repaired, for the operator
                logger.warning("recovery: %s", note)
        topic = _Topic(TopicInfo(name, count, config, dict(overrides)), partitions)
        self._topics[name] = topic
        return topic

    def _write_meta(self, name: str, count: int, overrides: Mapping[str, str]) -> None:
        meta = {"partitions": count, "overrides": dict(overrides)}
        write_json(self.fs, f"{self._topic_dir(name)}/topic.json", meta)

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None
    ) -> TopicInfo:
        """Create ``name`` with ``partitions`` partitions and Kafka-named ``config``."""
        check_topic_name(name)
        if not 1 <= partitions <= PARTITIONS_MAX:
            raise InvalidPartitionsError(
                f"topic {name!r}: {partitions} partitions; expected 1 to {PARTITIONS_MAX}"
            )
        overrides = {key: str(value) for key, value in (config or {}).items()}
        self.default_config.with_changes(overrides)  # validate before touching the disk
        with self._lock:
            if name in self._topics:
                raise TopicExistsError(f"topic {name!r} already exists")
            self.fs.makedirs(self._topic_dir(name))
            self.fs.fsync_dir(self._topics_dir())
            self._write_meta(name, partitions, overrides)
            return self._open_topic(name, partitions, overrides).info

    def delete_topic(self, name: str) -> None:
        with self._lock:
            topic = self._get(name)
            for partition in topic.partitions:
                partition.close()
            graveyard = f"{self._topics_dir()}/{_DELETED_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            self.fs.rename(self._topic_dir(name), graveyard)
            self.fs.fsync_dir(self._topics_dir())
            del self._topics[name]
            self.fs.rmtree(graveyard)

    def create_partitions(self, name: str, total: int) -> TopicInfo:
        """Grow ``name`` to ``total`` partitions (Kafka's CreatePartitions)."""
        with self._lock:
            topic = self._get(name)
            current = topic.info.partitions
            if not current < total <= PARTITIONS_MAX:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; the new count must be larger, "
                    f"up to {PARTITIONS_MAX} (got {total})"
                )
            for p in range(current, total):
                topic.partitions.append(
                    PartitionLog.open(
                        self.fs, self.clock, f"{self._topic_dir(name)}/{p}", name, p,
                        topic.info.config,
                    )
                )
            self._write_meta(name, total, topic.info.overrides)
            topic.info = TopicInfo(name, total, topic.info.config, topic.info.overrides)
            return topic.info

    def alter_config(
        self, name: str, changes: Mapping[str, Any], *, replace: bool = False
    ) -> TopicInfo:
        """Change a topic's config; ``replace`` drops overrides not named (AlterConfigs)."""
        with self._lock:
            topic = self._get(name)
            overrides = {} if replace else dict(topic.info.overrides)
            overrides.update({key: str(value) for key, value in changes.items()})
            config = self.default_config.with_changes(overrides)
            self._write_meta(name, topic.info.partitions, overrides)
            for partition in topic.partitions:
                partition.reconfigure(config)
            topic.info = TopicInfo(name, topic.info.partitions, config, overrides)
            return topic.info

    def topic_names(self) -> list[str]:
        with self._lock:
            return sorted(self._topics)

    def topic(self, name: str) -> TopicInfo:
        with self._lock:
            return self._get(name).info

    def has_topic(self, name: str) -> bool:
        with self._lock:
            return name in self._topics

    def partition(self, topic: str, partition: int) -> PartitionLog:
        with self._lock:
            partitions = self._get(topic).partitions
            if not 0 <= partition < len(partitions):
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} has no partition {partition} "
                    f"(it has {len(partitions)})"
                )
            return partitions[partition]

    def reopen_partition(self, topic: str, partition: int) -> PartitionLog:
        """Close and reopen one partition, recovering it as after a crash.

        This brings a partition back after a failed fsync took it offline: recovery
        checks everything after the last durable point and keeps what is intact.
        """
        with self._lock:
            old = self.partition(topic, partition)
            old.close()
            fresh = PartitionLog.open(
                self.fs, self.clock, old.directory, topic, partition, old.config
            )
            self._get(topic).partitions[partition] = fresh
            return fresh

    def _get(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}")
        return topic

    def _all_partitions(self) -> list[PartitionLog]:
        with self._lock:
            return [p for topic in self._topics.values() for p in topic.partitions]

    # -- maintenance ----------------------------------------------------------------------

    def run_maintenance(self) -> None:
        """Interval flushes, time-based rolls, retention and compaction for every partition.

        The log starts no threads; its owner (the broker, the worker) calls this
        periodically, every second or so.
        """
        from .compaction import compact_if_dirty

        for partition in self._all_partitions():
            try:
                partition.run_maintenance()
                if partition.config.compact:
                    compact_if_dirty(partition)
            except LogError:  # one damaged partition must not stop the others' upkeep
                logger.exception("maintenance of %s failed", partition.name)

    def flush(self) -> None:
        for partition in self._all_partitions():
            partition.flush()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            for partition in self._all_partitions():
                partition.close()
            self._closed = True

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def statistics(self) -> LogStatistics:
        partitions = tuple(partition.statistics() for partition in self._all_partitions())
        return LogStatistics(self.root, len(self._topics), partitions)


def check_topic_name(name: str) -> None:
    if name in (".", "..") or not _TOPIC_NAME.match(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: use 1 to 249 of a-z A-Z 0-9 . _ - "
            "(and not '.' or '..')"
        )
