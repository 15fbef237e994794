"""The transport interface the runtime is written against."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..events import Event, Headers, TopicPartition

__all__ = [
    "PartitionReader",
    "RebalanceListener",
    "TopicSpec",
    "Transport",
    "TransportConsumer",
    "open_transport",
]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic an app needs; created if missing, checked if present."""

    name: str
    partitions: int | None = None  # None: the log's default (existing topics keep theirs)
    config: Mapping[str, str] = field(default_factory=dict)  # Kafka-named topic configs


class RebalanceListener(Protocol):
    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """Called before partitions move away: finish and commit what was read from them."""

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Called once new partitions are this consumer's, before any is fetched."""


class TransportConsumer(abc.ABC):
    """A member of a consumer group: partitions assigned to it, fetches, commits."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Join the group (or take every partition when it is the only possible member)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group; does not commit (the runtime commits first)."""

    @abc.abstractmethod
    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        """Events from assigned partitions, in offset order per partition, with raw
        ``bytes | None`` keys and values; waits up to ``timeout_ms`` when there are none."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, for each partition, the offset of the next event to process."""

    @abc.abstractmethod
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now."""

    @abc.abstractmethod
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""

    @abc.abstractmethod
    def pause(self, partitions: frozenset[TopicPartition]) -> None:
        """Fetch nothing of these partitions until :meth:`resume` (what a fetch already
        buffered for them is dropped, their positions kept)."""

    @abc.abstractmethod
    def resume(self, partitions: frozenset[TopicPartition]) -> None:
        """Fetch these partitions again, from their positions."""

    def standby_partitions(self) -> frozenset[int]:
        """Partition numbers whose state this member keeps warm for another (the
        ``streamer`` assignor's standby replicas); empty with other assignors."""
        return frozenset()


class PartitionReader(abc.ABC):
    """Reads partitions assigned by hand, from given offsets: restoring and tailing table
    changelogs. Events carry raw ``bytes | None`` keys and values."""

    @abc.abstractmethod
    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark of each partition (the offset the next record will get)."""

    @abc.abstractmethod
    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        """Read these partitions (too) from these offsets on."""

    @abc.abstractmethod
    def unassign(self, partitions: Sequence[TopicPartition]) -> None:
        """Stop reading these partitions."""

    @abc.abstractmethod
    def assigned(self) -> frozenset[TopicPartition]: ...

    @abc.abstractmethod
    async def position(self, partition: TopicPartition) -> int:
        """The offset the next read of an assigned partition starts at."""

    @abc.abstractmethod
    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        """Events of the assigned partitions, in offset order per partition; waits up to
        ``timeout_ms`` when there are none."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class Transport(abc.ABC):
    """Produce to and consume from topics of one log (embedded or over the Kafka protocol)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what was produced, then release everything."""

    @abc.abstractmethod
    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> dict[str, int]:
        """Create the topics that don't exist; returns every topic's partition count."""

    @abc.abstractmethod
    def partition_count(self, topic: str) -> int:
        """Partitions of a topic passed to :meth:`ensure_topics` (or seen since)."""

    @abc.abstractmethod
    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        """Queue a record for ``partition``; may wait when the send buffer is full. It is
        acknowledged (durable) once :meth:`flush` returns."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything sent so far is acknowledged; raises if any send failed."""

    @abc.abstractmethod
    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        auto_offset_reset: str = "earliest",
        standby_replicas: int = 0,
    ) -> TransportConsumer:
        """A group member subscribed to ``topics``; starts at the committed offsets, else
        at ``auto_offset_reset`` ("earliest" or "latest"). Partition ``p`` of every topic
        goes to the same member (co-partitioning), and ``standby_replicas`` other members
        are named to keep each partition number's state warm."""

    @abc.abstractmethod
    def reader(self) -> PartitionReader:
        """A reader of partitions picked by hand, outside any group (changelogs)."""


def open_transport(url: str, *, app_id: str, listen: str | None = "127.0.0.1:0") -> Transport:
    """The transport for a broker URL: ``kafka://host:port[,host:port]`` → Kafka protocol;
    ``memory://``, a path or ``file://path`` → the embedded log, served on ``listen``
    (None: not served)."""
    if url.startswith("kafka://"):
        from .kafka import KafkaTransport

        transport: Transport = KafkaTransport(url.removeprefix("kafka://"), client_id=app_id)
        return transport
    from .embedded import EmbeddedTransport

    return EmbeddedTransport(url, app_id=app_id, listen=listen)
