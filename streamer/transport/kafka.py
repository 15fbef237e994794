"""The Kafka transport: aiokafka to any Kafka-protocol broker (``streamer broker``, Kafka,
Redpanda).

Producing bypasses aiokafka's per-record ``send()``, which makes a future and a task switch for
every record. Instead each partition has one open record-batch builder (aiokafka's
C-accelerated ``DefaultRecordBatchBuilder`` behind ``producer.create_batch()``); ``send``
appends to it, and a full builder (or every open one, on ``flush``) is handed to the producer
whole with ``send_batch``. The producer is idempotent with ``acks="all"``, so a retried batch
is never written twice. Records sit in an open builder until it fills or ``flush`` runs: the
runtime flushes at each checkpoint, which is also when outputs become visible to
``read_committed`` readers once transactions are in.

Hand-overs to one partition stay in the order their builders were closed even when several
tasks send at once: each takes a place in a per-partition chain before its first ``await``.

Topics are created with the admin client; the consumer lives in
:mod:`streamer.transport.kafka_consumer`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, NoError, TopicAlreadyExistsError, for_code

from ..events import Headers
from .base import RebalanceListener, TopicSpec, Transport, TransportConsumer
from .kafka_client import (
    CONNECT_TIMEOUT_MS,
    REQUEST_TIMEOUT_MS,
    BrokerUnreachableError,
    ConsumerError,
    DeliveryError,
    TopicSetupError,
    TransportError,
    start_bounded,
)
from .kafka_consumer import KafkaTransportConsumer

__all__ = [
    "BrokerUnreachableError",
    "ConsumerError",
    "DeliveryError",
    "KafkaTransport",
    "KafkaTransportConsumer",
    "TopicSetupError",
    "TransportError",
]

# One record batch. Kafka's default max.message.bytes is 1 MiB (plus a little); half of it
# keeps a batch acceptable to topics with default limits while amortising the per-batch cost.
BATCH_BYTES_MAX = 512 * 1024
# Batches handed to the producer and not yet acknowledged; past this, ``send`` waits for the
# oldest. Together with one open builder per partition this bounds the producer's memory.
UNACKED_BATCHES_MAX = 32
# How long ``ensure_topics`` waits for created topics to show up with leaders in the metadata
# (immediate on one node; a real cluster propagates metadata asynchronously).
TOPIC_METADATA_WAIT_MS = 10_000
TOPIC_METADATA_RETRY_MS = 100

_Partition = tuple[str, int]
_NO_HEADERS: list[tuple[str, bytes]] = []


class KafkaTransport(Transport):
    """:class:`~streamer.transport.base.Transport` over the Kafka protocol (aiokafka).

    ``bootstrap`` is ``host:port[,host:port…]``. ``isolation_level`` is what consumers read:
    ``"read_committed"`` (the default: outputs of aborted transactions are never seen) or
    ``"read_uncommitted"``.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        connect_timeout_ms: int = CONNECT_TIMEOUT_MS,
        isolation_level: str = "read_committed",
    ) -> None:
        assert isolation_level in ("read_committed", "read_uncommitted"), isolation_level
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.connect_timeout_ms = connect_timeout_ms
        self.isolation_level = isolation_level
        self._producer: Any = None  # AIOKafkaProducer once started
        self._admin: Any = None  # AIOKafkaAdminClient once started
        self._partition_counts: dict[str, int] = {}
        self._open_batches: dict[_Partition, Any] = {}  # aiokafka BatchBuilder per partition
        # The last hand-over per partition, resolved once its batch is with the producer.
        self._hand_over_tails: dict[_Partition, asyncio.Future[None]] = {}
        self._unacked: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._failure: DeliveryError | None = None  # the first since the last flush

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        assert self._producer is None, "KafkaTransport.start() called twice"
        self._producer = self._new_producer()
        await start_bounded(
            self._producer.start(), self._producer.stop,
            bootstrap=self.bootstrap, what="producer", timeout_ms=self.connect_timeout_ms,
        )
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self.client_id,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        try:
            await start_bounded(
                self._admin.start(), self._admin.close,
                bootstrap=self.bootstrap, what="admin client",
                timeout_ms=self.connect_timeout_ms,
            )
        except BrokerUnreachableError:
            await self._producer.stop()
            raise

    def _new_producer(self) -> Any:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            max_batch_size=BATCH_BYTES_MAX,
            linger_ms=0,  # batches are built here; a handed-over batch is already full or flushed
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )

    async def close(self) -> None:
        """Flush, then close the producer and the admin client (even if the flush fails)."""
        producer, admin = self._producer, self._admin
        if producer is None:
            return
        try:
            await self.flush()
        finally:
            self._producer = self._admin = None
            await producer.stop()
            if admin is not None:
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
            raise TopicSetupError(name, f"cannot create topics {sorted(unique)}: {exc!r}") from exc
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
            for topic in await self._admin.describe_topics(topics):
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
        count = self._partition_counts.get(topic)
        if count is not None:
            return count
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            raise TransportError(f"unknown topic {topic!r}: pass it to ensure_topics() first")
        return len(partitions)

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
            builder = self._open_batches[where] = self._producer.create_batch()
        # The C builder takes headers only as a list; it does not keep or change the list.
        header_list = list(headers) if headers else _NO_HEADERS
        appended = builder.append(
            timestamp=timestamp_ms, key=key, value=value, headers=header_list
        )
        if appended is not None:
            return
        # Full: this record starts the next builder (an empty builder takes any record, even
        # one larger than a batch: the broker then judges it against max.message.bytes).
        fresh = self._open_batches[where] = self._producer.create_batch()
        fresh.append(timestamp=timestamp_ms, key=key, value=value, headers=header_list)
        await self._hand_over(where, builder)
        if len(self._unacked) > UNACKED_BATCHES_MAX:
            self._drop_acknowledged()
            if len(self._unacked) > UNACKED_BATCHES_MAX:
                await asyncio.wait([self._unacked[0]])
                self._drop_acknowledged()

    def _hand_over(self, where: _Partition, builder: Any) -> asyncio.Future[None]:
        """Queue ``builder`` for the producer behind the partition's earlier hand-overs.

        Plain ``def``: the place in the chain is taken now, before the caller's first await.
        """
        previous = self._hand_over_tails.get(where)
        tail: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hand_over_tails[where] = tail
        builder.close()
        return asyncio.ensure_future(self._ship(where, builder, previous, tail))

    async def _ship(
        self,
        where: _Partition,
        builder: Any,
        previous: asyncio.Future[None] | None,
        tail: asyncio.Future[None],
    ) -> None:
        topic, partition = where
        try:
            if previous is not None:
                await previous
            # Waits while the partition's previous batch is still queued in the producer.
            delivery = await self._producer.send_batch(builder, topic, partition=partition)
        except (KafkaError, AssertionError) as exc:  # timed out queueing, closed, bad partition
            self._record_failure(topic, partition, builder.record_count(), exc)
        else:
            delivery.add_done_callback(
                functools.partial(self._on_delivered, topic, partition, builder.record_count())
            )
            self._unacked.append(delivery)
        finally:
            tail.set_result(None)
            if self._hand_over_tails.get(where) is tail:
                del self._hand_over_tails[where]

    def _on_delivered(
        self, topic: str, partition: int, records: int, delivery: asyncio.Future[Any]
    ) -> None:
        if delivery.cancelled():
            self._record_failure(topic, partition, records, asyncio.CancelledError())
        elif (exc := delivery.exception()) is not None:
            self._record_failure(topic, partition, records, exc)

    def _record_failure(
        self, topic: str, partition: int, records: int, cause: BaseException
    ) -> None:
        if self._failure is None:
            failure = DeliveryError(topic, partition, records, cause)
            failure.__cause__ = cause
            self._failure = failure

    def _drop_acknowledged(self) -> None:
        unacked = self._unacked
        while unacked and unacked[0].done():
            unacked.popleft()

    async def flush(self) -> None:
        """Hand over every open batch and wait for all acknowledgements.

        Raises :class:`DeliveryError` (for the first failed batch) if any record produced
        since the last flush was not delivered; the producer is then replaced, since an
        idempotent producer's sequence numbers have a gap after a refused batch.
        """
        open_batches = list(self._open_batches.items())
        self._open_batches.clear()
        shipping = [self._hand_over(where, builder) for where, builder in open_batches]
        shipping += self._hand_over_tails.values()  # hand-overs started by concurrent sends
        if shipping:
            await asyncio.wait(shipping)
        if self._unacked:
            await asyncio.wait(list(self._unacked))
        self._drop_acknowledged()
        failure, self._failure = self._failure, None
        if failure is not None:
            await self._replace_producer()
            raise failure

    async def _replace_producer(self) -> None:
        old, new = self._producer, self._new_producer()
        await start_bounded(
            new.start(), new.stop,
            bootstrap=self.bootstrap, what="producer", timeout_ms=self.connect_timeout_ms,
        )
        self._producer = new
        with contextlib.suppress(KafkaError):
            await old.stop()

    # -- consuming ----------------------------------------------------------------------

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        auto_offset_reset: str = "earliest",
    ) -> TransportConsumer:
        return KafkaTransportConsumer(
            self.bootstrap,
            client_id=self.client_id,
            group_id=group_id,
            topics=topics,
            listener=listener,
            auto_offset_reset=auto_offset_reset,
            isolation_level=self.isolation_level,
            connect_timeout_ms=self.connect_timeout_ms,
        )
