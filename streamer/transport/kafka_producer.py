"""Shipping whole record batches to an idempotent aiokafka producer.

aiokafka's per-record ``send()`` makes a future and a task switch for every record. The Kafka
transport instead fills one record-batch builder per partition itself (``new_batch()``:
aiokafka's C-accelerated ``DefaultRecordBatchBuilder``) and hands a full one over whole with
``producer.send_batch``. :class:`BatchShipper` is that hand-over and everything after it:

- Order. aiokafka queues one batch per partition and makes a second one wait until the
  first is on the wire; two tasks handing over to one partition could then overtake each
  other. Each hand-over therefore takes its place in a per-partition chain synchronously,
  before its first ``await``, and reaches the producer only after its predecessor did.
- Bounds. At most :data:`UNACKED_BATCHES_MAX` batches are handed over and not yet
  acknowledged; :meth:`BatchShipper.ship` waits for the oldest beyond that.
- Failures. A refused or unacknowledged batch is remembered and raised by the next
  :meth:`BatchShipper.flush` as :class:`DeliveryError`, which then replaces the producer:
  after a refused batch an idempotent producer's sequence numbers have a gap the broker
  rejects, and a producer whose broker vanished retries forever.
- Transactions. With a ``transactional_id`` the producer is aiokafka's transactional one,
  always inside a transaction: one begins when the producer starts (InitProducerId, which
  aborts a predecessor's open transaction and fences it) and after every
  :meth:`BatchShipper.commit` and :meth:`BatchShipper.abort`. A replaced producer (after a
  failure, or an abort the broker did not answer) re-initialises with the same id, which
  aborts whatever the old one left open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, KafkaTimeoutError, ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from .kafka_client import (
    REQUEST_TIMEOUT_MS,
    BrokerUnreachableError,
    DeliveryError,
    TransactionAbortedError,
    TransactionFencedError,
    TransportError,
    explain,
    start_bounded,
)

__all__ = [
    "BATCH_BYTES_MAX",
    "DELIVERY_TIMEOUT_MS",
    "UNACKED_BATCHES_MAX",
    "BatchShipper",
    "Partition",
]

# One record batch. Kafka's default max.message.bytes is 1 MiB (plus a little); half of it
# keeps a batch acceptable to topics with default limits while amortising the per-batch cost.
BATCH_BYTES_MAX = 512 * 1024
# Batches handed over and not yet acknowledged; past this, ``ship`` waits for the oldest.
# With one open builder per partition this bounds the producer's memory.
UNACKED_BATCHES_MAX = 32
# ``flush`` gives up on acknowledgements after this (Kafka's delivery.timeout.ms default):
# an idempotent aiokafka producer otherwise retries a batch for as long as the broker is away.
DELIVERY_TIMEOUT_MS = 120_000
# Stopping a producer waits for its in-flight requests; a dead broker must not hold it longer.
PRODUCER_STOP_TIMEOUT_MS = 5_000
# The coordinator aborts a transaction open longer than this, and fences its producer.
TRANSACTION_TIMEOUT_MS = 60_000

Partition = tuple[str, int]


class _Delivery(NamedTuple):
    """A batch handed over: resolved (always with None) once acknowledged or failed."""

    settled: asyncio.Future[None]
    topic: str
    partition: int
    records: int


class BatchShipper:
    """Hands closed record batches to one idempotent ``acks="all"`` aiokafka producer."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        connect_timeout_ms: int,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.connect_timeout_ms = connect_timeout_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.transactional_id: str | None = None  # make_transactional()
        self._producer: Any = None  # AIOKafkaProducer once started
        # The last hand-over per partition, resolved once its batch is with the producer.
        self._tails: dict[Partition, asyncio.Future[None]] = {}
        self._hand_overs: set[asyncio.Task[None]] = set()
        self._unacked: collections.deque[_Delivery] = collections.deque()
        self._failure: DeliveryError | None = None  # the first since the last flush
        # Set when a failed producer could not be replaced: the transport must be reopened.
        self.broken: TransportError | None = None

    async def start(self) -> None:
        assert self._producer is None, "BatchShipper.start() called twice"
        self._producer = await self._start_producer()

    async def _start_producer(self) -> Any:
        transactional = {} if self.transactional_id is None else {
            "transactional_id": self.transactional_id,
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            max_batch_size=BATCH_BYTES_MAX,
            linger_ms=0,  # a batch handed over is full or flushed: nothing to wait for
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            **transactional,
        )
        await start_bounded(
            producer.start(), producer.stop,
            bootstrap=self.bootstrap, what="producer", timeout_ms=self.connect_timeout_ms,
        )
        if self.transactional_id is not None:
            try:
                await self._begin(producer)
            except BaseException:
                await _stop_producer(producer)
                raise
        return producer

    # -- transactions -----------------------------------------------------------------------

    async def make_transactional(self, transactional_id: str) -> None:
        """Replace the idempotent producer with a transactional one (nothing may have been
        sent yet); its start fences a predecessor with the same id."""
        assert not self._unacked, "make_transactional() before any send"
        self.transactional_id = transactional_id
        old, self._producer = self._producer, await self._start_producer()
        if old is not None:
            await _stop_producer(old)

    async def _begin(self, producer: Any) -> None:
        """The next transaction (waits for the producer id the first time)."""
        await self._transactional("begin", producer.begin_transaction(),
                                  self.connect_timeout_ms, producer)

    async def commit(
        self, builders: list[tuple[Partition, Any]],
        offsets: dict[tuple[str, int], int], group_id: str | None,
    ) -> None:
        """Flush ``builders`` (as :meth:`flush`), add ``offsets`` for ``group_id``, commit;
        then begin the next transaction. Raises ``TransactionAbortedError`` (then call
        :meth:`abort`) or ``TransactionFencedError``."""
        assert self.transactional_id is not None
        try:
            await self.flush(builders)
        except DeliveryError as error:  # the producer was replaced: its transaction aborted
            raise TransactionAbortedError(self.transactional_id, str(error)) from error
        except TransportError as error:
            raise TransactionAbortedError(self.transactional_id, str(error)) from error
        producer = self._producer
        timeout_ms = self.delivery_timeout_ms
        if offsets:
            assert group_id is not None
            committed = {KafkaTopicPartition(topic, partition): OffsetAndMetadata(offset, "")
                         for (topic, partition), offset in offsets.items()}
            await self._transactional(
                "send_offsets_to_transaction",
                producer.send_offsets_to_transaction(committed, group_id), timeout_ms, producer)
        await self._transactional("commit", producer.commit_transaction(), timeout_ms, producer)
        await self._begin(producer)

    async def abort(self) -> None:
        """Drop the transaction (builders not handed over are the caller's to drop), then
        begin the next; a producer that cannot abort is replaced (which aborts too)."""
        assert self.transactional_id is not None
        producer = self._producer
        for task in list(self._hand_overs):
            task.cancel()
        for tail in self._tails.values():  # a task cancelled before it ran never resolves it
            if not tail.done():
                tail.set_result(None)
        self._tails.clear()
        try:
            await self._transactional("abort", producer.abort_transaction(),
                                      self.delivery_timeout_ms, producer)
            await self._begin(producer)
        except TransactionAbortedError:
            self._producer = await self._start_producer()  # fences the old one, aborting
            await _stop_producer(producer)
        for delivery in self._unacked:
            self._settle(delivery, None)
        self._unacked.clear()
        self._failure = None

    async def _transactional(
        self, what: str, call: Any, timeout_ms: int, producer: Any
    ) -> None:
        """Await one of aiokafka's transaction calls; its errors made ours."""
        assert self.transactional_id is not None
        try:
            await asyncio.wait_for(call, timeout_ms / 1000)
        except ProducerFenced as error:
            raise TransactionFencedError(self.transactional_id, f"{what}: fenced") from error
        except (KafkaError, IllegalOperation, TimeoutError, AssertionError) as error:
            if producer._txn_manager.is_fatal_error():  # noqa: SLF001
                raise TransactionFencedError(
                    self.transactional_id, f"{what}: {explain(error)}") from error
            raise TransactionAbortedError(
                self.transactional_id, f"{what}: {explain(error)}") from error

    async def close(self) -> None:
        """Stop the producer (within a bound); call :meth:`flush` first to keep its batches."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_producer(producer)

    def new_batch(self) -> Any:
        """An empty record-batch builder: ``append(timestamp=, key=, value=, headers=)``
        returns None once it is full (an empty builder takes any record, even a large one)."""
        return self._producer.create_batch()

    def known_partitions(self, topic: str) -> int | None:
        """The topic's partition count in the producer's metadata, if it has seen it."""
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        return len(partitions) if partitions else None

    @property
    def unacked_batches(self) -> int:
        return len(self._unacked)

    async def ship(self, where: Partition, builder: Any) -> None:
        """Hand over a full builder. Waits while the partition's previous batch is still
        queued in the producer, or while too many batches are unacknowledged."""
        if self.broken is not None:
            raise self.broken
        await asyncio.wait([self._hand_over(where, builder)])
        if len(self._unacked) > UNACKED_BATCHES_MAX:
            self._drop_settled()
            if len(self._unacked) > UNACKED_BATCHES_MAX:
                await asyncio.wait([self._unacked[0].settled])
                self._drop_settled()

    def hand_over(self, builders: list[tuple[Partition, Any]]) -> None:
        """Hand ``builders`` over in this order, without waiting (:meth:`flush` waits)."""
        if self.broken is not None:
            raise self.broken
        for where, builder in builders:
            self._hand_over(where, builder)

    def _hand_over(self, where: Partition, builder: Any) -> asyncio.Task[None]:
        """Plain ``def``: the batch's place in the partition's chain is taken now."""
        loop = asyncio.get_running_loop()
        builder.close()
        delivery = _Delivery(loop.create_future(), *where, builder.record_count())
        self._unacked.append(delivery)
        previous = self._tails.get(where)
        tail = self._tails[where] = loop.create_future()
        task = loop.create_task(self._hand_over_in_turn(builder, delivery, previous, tail))
        self._hand_overs.add(task)
        task.add_done_callback(self._hand_overs.discard)
        return task

    async def _hand_over_in_turn(
        self,
        builder: Any,
        delivery: _Delivery,
        previous: asyncio.Future[None] | None,
        tail: asyncio.Future[None],
    ) -> None:
        try:
            if previous is not None:
                await previous
            acknowledged = await self._producer.send_batch(
                builder, delivery.topic, partition=delivery.partition
            )
        except (KafkaError, AssertionError) as exc:  # queueing timed out, closed, bad partition
            self._settle(delivery, exc)
        else:
            acknowledged.add_done_callback(functools.partial(self._on_acknowledged, delivery))
        finally:
            tail.set_result(None)
            where = (delivery.topic, delivery.partition)
            if self._tails.get(where) is tail:
                del self._tails[where]

    def _on_acknowledged(self, delivery: _Delivery, acknowledged: asyncio.Future[Any]) -> None:
        if acknowledged.cancelled():
            self._settle(delivery, asyncio.CancelledError())
        else:
            self._settle(delivery, acknowledged.exception())

    def _settle(self, delivery: _Delivery, exc: BaseException | None) -> None:
        if delivery.settled.done():
            return  # given up on (and reported) already
        delivery.settled.set_result(None)
        if exc is not None and self._failure is None:
            failure = DeliveryError(delivery.topic, delivery.partition, delivery.records, exc)
            failure.__cause__ = exc
            self._failure = failure

    def _drop_settled(self) -> None:
        unacked = self._unacked
        while unacked and unacked[0].settled.done():
            unacked.popleft()

    async def flush(self, builders: list[tuple[Partition, Any]]) -> None:
        """Hand ``builders`` over, then wait (at most ``delivery_timeout_ms``) until every
        batch handed over so far is acknowledged; raise :class:`DeliveryError` for the first
        that was not, after replacing the producer."""
        if self.broken is not None:
            raise self.broken
        for where, builder in builders:
            self._hand_over(where, builder)
        # Only what was handed over by now: sends that go on meanwhile belong to the next flush.
        waiting = list(self._unacked)
        if waiting:
            await asyncio.wait(
                [delivery.settled for delivery in waiting], timeout=self.delivery_timeout_ms / 1000
            )
        late = [delivery for delivery in waiting if not delivery.settled.done()]
        if late:
            self._settle(late[0], TimeoutError(
                f"not acknowledged within {self.delivery_timeout_ms} ms ({len(late)} batch(es) "
                f"of {sum(delivery.records for delivery in late)} records in all)"
            ))
        self._drop_settled()
        failure, self._failure = self._failure, None
        if failure is not None:
            if self.transactional_id is not None and isinstance(failure.__cause__, ProducerFenced):
                # A newer producer has the id: re-initialising would fence it in turn.
                raise TransactionFencedError(self.transactional_id, str(failure)) from failure
            await self._replace_producer(failure, abandon=bool(late))
            raise failure

    async def _replace_producer(self, failure: DeliveryError, *, abandon: bool) -> None:
        old = self._producer
        if abandon:
            for delivery in self._unacked:
                self._settle(delivery, None)
            self._unacked.clear()
            for task in list(self._hand_overs):
                task.cancel()
            # aiokafka retries an idempotent batch until the broker takes it, and its stop()
            # waits for that; failing the queued batches is the one way to make it return.
            old._message_accumulator.fail_all(  # noqa: SLF001
                KafkaTimeoutError(f"abandoned after {self.delivery_timeout_ms} ms")
            )
        # The new producer first, so that hand-overs from concurrent sends reach it rather than
        # the one being stopped.
        try:
            self._producer = await self._start_producer()
        except BrokerUnreachableError as exc:
            self.broken = TransportError(
                f"the producer to {self.bootstrap} failed and could not be restarted "
                f"({exc}); close and reopen the transport"
            )
            failure.add_note(str(self.broken))
        await _stop_producer(old)


async def _stop_producer(producer: Any) -> None:
    """Stop an aiokafka producer within a bound, whatever state its broker is in."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), PRODUCER_STOP_TIMEOUT_MS / 1000)
