"""The transport interface the runtime is written against.

Producing is at-least-once by default: :meth:`Transport.send` queues, :meth:`Transport.flush`
waits for the log's acknowledgement. A transport made transactional with
:meth:`Transport.init_transactions` (the worker's ``processing_guarantee="exactly_once"``)
puts every send into a transaction that begins at the first send, is closed to new sends by
:meth:`Transport.seal_transaction` (later sends belong to the next one) and ends with
:meth:`Transport.commit_transaction` (the sends, and the consumer's offsets, visible to
``read_committed`` readers at once) or :meth:`Transport.abort_transaction` (none of it ever
visible). Their errors (:mod:`streamer.transport.kafka_client`) say what the caller can do:
``TransactionAbortedError``, abort and redo the work since the last commit;
``TransactionFencedError``, stop: another producer or group member took over.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..events import Event, Headers, TopicPartition

__all__ = [
    "ISOLATION_LEVELS",
    "PartitionReader",
    "RebalanceListener",
    "TopicSpec",
    "Transport",
    "TransportConsumer",
    "open_transport",
]


# What a consumer or reader returns of transactional data: "read_uncommitted" everything
# written, "read_committed" only committed transactions, below the last stable offset.
ISOLATION_LEVELS = ("read_uncommitted", "read_committed")


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
        isolation_level: str | None = None,
        group_instance_id: str | None = None,
    ) -> TransportConsumer:
        """A group member subscribed to ``topics``; starts at the committed offsets, else
        at ``auto_offset_reset`` ("earliest" or "latest"). Partition ``p`` of every topic
        goes to the same member (co-partitioning), and ``standby_replicas`` other members
        are named to keep each partition number's state warm. ``isolation_level`` is one of
        :data:`ISOLATION_LEVELS` (None: the transport's default). ``group_instance_id``
        makes the member static where the group lives in another process: a restart with
        the same id takes its place at once (KIP-345)."""

    @abc.abstractmethod
    def reader(self, *, isolation_level: str | None = None) -> PartitionReader:
        """A reader of partitions picked by hand, outside any group (changelogs)."""

    # -- transactions (exactly-once) ------------------------------------------------------

    @abc.abstractmethod
    async def init_transactions(self, transactional_id: str) -> None:
        """From now on, every send goes into a transaction of ``transactional_id``.

        Registers the id with the log's transaction coordinator, which aborts a transaction
        a predecessor with the same id left open and fences that predecessor: its later
        writes and commits fail. Raises ``TransactionFencedError`` if this producer is
        fenced in turn before it starts."""

    @abc.abstractmethod
    def seal_transaction(self) -> None:
        """Close the open transaction to new sends: it holds what was sent until now, and
        the next :meth:`commit_transaction` commits it. Sends from now on belong to the
        next transaction; they may run while this one commits (their records wait)."""

    @abc.abstractmethod
    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: TransportConsumer | None
    ) -> None:
        """Commit the sealed transaction: what was sent before the seal, and ``offsets``
        as ``consumer``'s group's committed offsets (checked against the consumer's
        generation where the protocol carries it), all visible at once. Nothing sent and
        no offsets: nothing to do.

        Raises ``TransactionAbortedError`` when the transaction could not commit and was
        not (call :meth:`abort_transaction`), and ``TransactionFencedError`` when this
        producer or member was replaced."""

    @abc.abstractmethod
    async def abort_transaction(self) -> None:
        """Drop everything sent since the last commit (the sealed transaction and what was
        sent after the seal): none of it becomes visible to ``read_committed`` readers.
        Raises ``TransactionFencedError`` when fenced."""


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
