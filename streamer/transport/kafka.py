"""The Kafka transport: aiokafka to any Kafka-protocol broker (``streamer broker``, Kafka,
Redpanda).

``send`` appends each record straight into an open record-batch builder for its partition
(aiokafka's C-accelerated builder) instead of calling aiokafka's per-record ``send()``; a
full builder, or every open one on ``flush``, goes to an idempotent ``acks="all"`` producer
whole (:mod:`streamer.transport.kafka_producer`). Records therefore wait in an open builder
until it fills or ``flush`` runs: the runtime flushes at each checkpoint.

Topics are created with aiokafka's admin client; the group consumer lives in
:mod:`streamer.transport.kafka_consumer`.

:meth:`KafkaTransport.init_transactions` makes the producer aiokafka's transactional one
(exactly-once workers): the same batches go out inside a transaction, and
:meth:`KafkaTransport.commit_transaction` adds the consumer's offsets with
``send_offsets_to_transaction`` and commits. aiokafka speaks TxnOffsetCommit v0, which
carries no group generation: before committing offsets this transport checks that the
consumer is still in the generation its transaction began in and not asked to rejoin, and
aborts otherwise (the broker cannot refuse a zombie's offsets by generation, as KIP-447 does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, NoError, TopicAlreadyExistsError, for_code

from ..events import Headers, TopicPartition
from .base import RebalanceListener, TopicSpec, Transport, TransportConsumer
from .kafka_client import (
    CONNECT_TIMEOUT_MS,
    REQUEST_TIMEOUT_MS,
    BrokerUnreachableError,
    ConsumerError,
    DeliveryError,
    TopicSetupError,
    TransactionAbortedError,
    TransactionError,
    TransportError,
    explain,
    start_bounded,
)
from .kafka_consumer import KafkaReader, KafkaTransportConsumer
from .kafka_producer import DELIVERY_TIMEOUT_MS, BatchShipper, Partition

__all__ = [
    "BrokerUnreachableError",
    "ConsumerError",
    "DeliveryError",
    "KafkaTransport",
    "KafkaTransportConsumer",
    "TopicSetupError",
    "TransportError",
]

# How long ``ensure_topics`` waits for created topics to show up with leaders in the metadata
# (immediate on one node; a real cluster propagates metadata asynchronously).
TOPIC_METADATA_WAIT_MS = 10_000
TOPIC_METADATA_RETRY_MS = 100

_NO_HEADERS: list[tuple[str, bytes]] = []


class KafkaTransport(Transport):
    """:class:`~streamer.transport.base.Transport` over the Kafka protocol (aiokafka).

    ``bootstrap`` is ``host:port[,host:port…]``. ``isolation_level`` is what consumers read:
    ``"read_committed"`` (the default: outputs of aborted transactions are never seen) or
    ``"read_uncommitted"``. ``connect_timeout_ms`` bounds each client's start;
    ``delivery_timeout_ms`` bounds :meth:`flush`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
        isolation_level: str = "read_committed",
    ) -> None:
        assert isolation_level in ("read_committed", "read_uncommitted"), isolation_level
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.connect_timeout_ms = connect_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.isolation_level = isolation_level
        self._shipper = BatchShipper(
            bootstrap, client_id=client_id, connect_timeout_ms=connect_timeout_ms,
            delivery_timeout_ms=delivery_timeout_ms,
        )
        self._admin: Any = None  # AIOKafkaAdminClient once started
        self._partition_counts: dict[str, int] = {}
        self._open_batches: dict[Partition, Any] = {}  # aiokafka BatchBuilder per partition
        # Transactions: the committing one's builders, and the next one's that filled
        # while it commits (shipped after it: a producer has one transaction at a time).
        self._sealed: list[tuple[Partition, Any]] = []
        self._held: list[tuple[Partition, Any]] = []
        self._committing = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        assert self._admin is None, "KafkaTransport.start() called twice"
        await self._shipper.start()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self.client_id,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        try:
            await start_bounded(
                admin.start(), admin.close,
                bootstrap=self.bootstrap, what="admin client",
                timeout_ms=self.connect_timeout_ms,
            )
        except BrokerUnreachableError:
            await self._shipper.close()
            raise
        self._admin = admin

    async def close(self) -> None:
        """Flush, then close the producer and the admin client (even if the flush fails).
        Transactional: abort the open transaction instead (what was to be kept was
        committed)."""
        admin, self._admin = self._admin, None
        if admin is None:
            return
        try:
            if self._shipper.transactional_id is not None:
                with contextlib.suppress(TransactionError):  # fenced: nothing of ours is open
                    await self.abort_transaction()
            elif self._shipper.broken is None:
                await self.flush()
        finally:
            await self._shipper.close()
            await admin.close()

    # -- topics -------------------------------------------------------------------------

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> dict[str, int]:
        admin = self._admin
        assert admin is not None, "KafkaTransport.start() first"
        unique = {spec.name: spec for spec in reversed(specs)}  # the first spec of a name wins
        if not unique:
            return {}
        # Create every topic and treat "already exists" as success: no existence probe (a
        # metadata request may auto-create a topic on Kafka) and no check-then-create race.
        # -1 asks the broker for its defaults (num.partitions, default.replication.factor).
        new_topics = [
            NewTopic(
                spec.name, spec.partitions or -1, -1,
                replica_assignments={}, topic_configs=dict(spec.config),
            )
            for spec in unique.values()
        ]
        try:
            response = await admin.create_topics(new_topics)
        except KafkaError as exc:
            name = next(iter(unique))
            raise TopicSetupError(
                name, f"cannot create topics {sorted(unique)}: {explain(exc)}"
            ) from exc
        for topic, error_code, *message in response.topic_errors:
            error = for_code(error_code)
            if error is not NoError and error is not TopicAlreadyExistsError:
                detail = f": {message[0]}" if message and message[0] else ""
                raise TopicSetupError(
                    topic, f"cannot create topic {topic!r}: {error.__name__}{detail}"
                )
        counts = await self._await_partition_counts(list(unique))
        self._partition_counts.update(counts)
        return counts

    async def _await_partition_counts(self, topics: list[str]) -> dict[str, int]:
        """Partition counts from the metadata, once every topic has a leader for each partition."""
        deadline = time.monotonic() + TOPIC_METADATA_WAIT_MS / 1000
        while True:
            counts: dict[str, int] = {}
            problems: dict[str, str] = {}
            try:
                described = await self._admin.describe_topics(topics)
            except KafkaError as exc:
                raise TopicSetupError(
                    topics[0], f"cannot read metadata of topics {topics}: {explain(exc)}"
                ) from exc
            for topic in described:
                name, partitions = topic["topic"], topic["partitions"]
                if topic["error_code"] != 0:
                    problems[name] = for_code(topic["error_code"]).__name__
                elif not partitions or any(p["leader"] < 0 for p in partitions):
                    problems[name] = "no leader yet"
                else:
                    counts[name] = len(partitions)
            missing = [name for name in topics if name not in counts]
            if not missing:
                return counts
            if time.monotonic() >= deadline:
                reasons = ", ".join(f"{name} ({problems.get(name, 'absent')})" for name in missing)
                raise TopicSetupError(
                    missing[0],
                    f"topics not ready after {TOPIC_METADATA_WAIT_MS} ms: {reasons}",
                )
            await asyncio.sleep(TOPIC_METADATA_RETRY_MS / 1000)

    def partition_count(self, topic: str) -> int:
        """Raises ``KeyError`` for a topic neither :meth:`ensure_topics` nor the producer's
        metadata has seen (as the embedded transport does for one the log lacks)."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._shipper.known_partitions(topic)
            if count is None:
                raise KeyError(topic)
            self._partition_counts[topic] = count
        return count

    # -- producing ----------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        where = (topic, partition)
        builder = self._open_batches.get(where)
        if builder is None:
            builder = self._open_batches[where] = self._shipper.new_batch()
        # The C builder takes headers only as a list; it does not keep or change the list.
        header_list = list(headers) if headers else _NO_HEADERS
        appended = builder.append(
            timestamp=timestamp_ms, key=key, value=value, headers=header_list
        )
        if appended is not None:
            return
        # Full: this record starts the next builder, and the full one is shipped.
        fresh = self._open_batches[where] = self._shipper.new_batch()
        fresh.append(timestamp=timestamp_ms, key=key, value=value, headers=header_list)
        if self._committing:
            self._held.append((where, builder))  # the next transaction's
            return
        await self._shipper.ship(where, builder)

    async def flush(self) -> None:
        """Ship every open batch and wait (at most ``delivery_timeout_ms``) until all are
        acknowledged.

        Raises :class:`DeliveryError`, naming the first failed batch, if any record sent since
        the last flush was refused or not acknowledged in time. The transport stays usable
        (with a new producer) unless no producer could be restarted; then every later
        ``flush``, and ``send`` once a batch fills, raises :class:`TransportError` until the
        transport is closed and opened again.
        """
        open_batches = list(self._open_batches.items())
        self._open_batches.clear()
        await self._shipper.flush(open_batches)

    # -- consuming ----------------------------------------------------------------------

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
        return KafkaTransportConsumer(
            self.bootstrap,
            client_id=self.client_id,
            group_id=group_id,
            topics=topics,
            listener=listener,
            auto_offset_reset=auto_offset_reset,
            isolation_level=isolation_level or self.isolation_level,
            connect_timeout_ms=self.connect_timeout_ms,
            standby_replicas=standby_replicas,
            group_instance_id=group_instance_id,
        )

    def reader(self, *, isolation_level: str | None = None) -> KafkaReader:
        return KafkaReader(self.bootstrap, client_id=self.client_id,
                           isolation_level=isolation_level or self.isolation_level,
                           connect_timeout_ms=self.connect_timeout_ms)

    # -- transactions -------------------------------------------------------------------

    async def init_transactions(self, transactional_id: str) -> None:
        assert not self._open_batches, "init_transactions() before any send"
        await self._shipper.make_transactional(transactional_id)

    def seal_transaction(self) -> None:
        assert self._shipper.transactional_id is not None, "init_transactions() first"
        assert not self._committing, "one commit at a time"
        self._sealed = list(self._open_batches.items())
        self._open_batches.clear()
        self._committing = True

    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: TransportConsumer | None
    ) -> None:
        transactional_id = self._shipper.transactional_id
        assert transactional_id is not None and self._committing, "seal_transaction() first"
        group_id = None
        if offsets:
            assert isinstance(consumer, KafkaTransportConsumer), "offsets of this transport's"
            if not consumer.in_generation():
                raise TransactionAbortedError(
                    transactional_id, f"group {consumer.group_id!r} is rebalancing or this "
                    "member left it: its offsets may belong to another member now")
            group_id = consumer.group_id
        sealed, self._sealed = self._sealed, []
        await self._shipper.commit(
            sealed, {(tp.topic, tp.partition): offset for tp, offset in offsets.items()},
            group_id,
        )
        # The next transaction has begun: what filled meanwhile goes first, in order.
        held, self._held = self._held, []
        self._shipper.hand_over(held)
        self._committing = False

    async def abort_transaction(self) -> None:
        assert self._shipper.transactional_id is not None, "init_transactions() first"
        self._open_batches.clear()  # never handed over: nothing to abort
        self._sealed.clear()
        self._held.clear()
        self._committing = False
        await self._shipper.abort()
