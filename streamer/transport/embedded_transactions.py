"""The embedded transport's transactional producer: Kafka's transactions, in process.

What a Kafka client's transaction manager does over the network, done here with direct calls
into the log's transaction coordinator (``broker.transactions``):

- :meth:`EmbeddedTransactions.init`: InitProducerId with the transactional id: a producer id
  and epoch, the predecessor's open transaction aborted and the predecessor fenced;
- :meth:`EmbeddedTransactions.join`: AddPartitionsToTxn before the first batch of a
  partition in a transaction (the transaction begins with it). The transport joins the
  partitions the last transaction wrote to as soon as it committed, in one call, so a
  steady stream's sends never wait for a join (a partition that stays quiet gets one
  marker more);
- batches are built with the producer id, the epoch, per-partition sequence numbers and the
  transactional bit (:meth:`EmbeddedTransactions.batch_header`), and appended to the log
  by the transport like any other;
- :meth:`EmbeddedTransactions.commit`: AddOffsetsToTxn and TxnOffsetCommit (with the
  consumer's generation and member id, so a member the group dropped cannot commit), then
  EndTxn: the coordinator writes the markers and applies the offsets;
- :meth:`EmbeddedTransactions.abort`: EndTxn(abort), then a new epoch (KIP-360's bump), so
  a batch half written before the abort never gets in the way of the next transaction's
  sequence numbers.

The coordinator's errors become the transport's: ``ProducerFencedError`` and a static member
fenced are :class:`~.kafka_client.TransactionFencedError`; a group that moved on (stale
generation, unknown member), a refused write and the rest are
:class:`~.kafka_client.TransactionAbortedError`. Retriable ones (the coordinator loading,
a previous transaction still completing) are retried for up to :data:`RETRY_S_MAX`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from streamer.log import LogError
from streamer.log.broker import Broker
from streamer.log.errors import ProducerFencedError
from streamer.log.transactions import TransactionCoordinator
from streamer.log.transactions.errors import FencedInstanceIdError, TransactionError

from ..events import TopicPartition
from .kafka_client import TransactionAbortedError, TransactionFencedError

__all__ = ["RETRY_S_MAX", "TRANSACTION_TIMEOUT_MS", "EmbeddedTransactions", "GroupMember"]

# The coordinator aborts a transaction open longer than this, and fences its producer.
TRANSACTION_TIMEOUT_MS = 60_000
RETRY_S_MAX = 10.0  # a retriable coordinator error is retried for this long
RETRY_BACKOFF_S = 0.01

T = TypeVar("T")
GroupMember = tuple[str, int, str]  # group id, generation id, member id


class EmbeddedTransactions:
    """One transactional id's producer in this process; made by the transport."""

    def __init__(
        self, broker: Broker, transactional_id: str, timeout_ms: int = TRANSACTION_TIMEOUT_MS
    ) -> None:
        self._broker = broker
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        self._sequences: dict[tuple[str, int], int] = {}  # next sequence per partition
        self._partitions: set[tuple[str, int]] = set()  # added to the open transaction
        self.open = False  # something was added: the coordinator has a transaction going
        # Sealed and committing: what is sent meanwhile belongs to the next transaction.
        self.committing = False

    @property
    def _coordinator(self) -> TransactionCoordinator:
        return self._broker.transactions

    async def init(self) -> None:
        """A producer id and epoch (a new epoch when this producer already had one)."""
        self.producer_id, self.producer_epoch = await self._call(
            "InitProducerId",
            lambda: self._coordinator.init_producer_id(
                self.transactional_id, self.timeout_ms,
                producer_id=self.producer_id, producer_epoch=self.producer_epoch,
            ),
        )  # fmt: skip
        self._sequences.clear()
        self._partitions.clear()
        self.open = False

    def joined(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._partitions

    async def join(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Add partitions to the transaction (beginning it), before their first batch: one
        AddPartitionsToTxn for all of them."""
        wanted = sorted(set(partitions) - self._partitions)
        if not wanted:
            return
        await self._call(
            "AddPartitionsToTxn",
            lambda: self._coordinator.add_partitions(
                self.transactional_id, self.producer_id, self.producer_epoch, wanted),
        )
        self._partitions.update(wanted)
        self.open = True

    def batch_header(self, topic: str, partition: int) -> tuple[int, int, int]:
        """(producer id, epoch, base sequence) of the next batch of a joined partition."""
        return self.producer_id, self.producer_epoch, self._sequences.get((topic, partition), 0)

    def closed(self, topic: str, partition: int, base_sequence: int, records: int) -> None:
        """A batch is complete: the partition's next batch starts after it."""
        self._sequences[(topic, partition)] = base_sequence + records

    async def commit(
        self, offsets: Mapping[TopicPartition, int], group: GroupMember | None
    ) -> None:
        """Offsets (for ``group``), then EndTxn(commit); the batches must be durable."""
        if offsets:
            assert group is not None, "offsets need the consumer's group"
            group_id, generation_id, member_id = group
            txn_id, pid, epoch = self.transactional_id, self.producer_id, self.producer_epoch
            await self._call("AddOffsetsToTxn", lambda: self._coordinator.add_offsets(
                txn_id, pid, epoch, group_id))
            self.open = True
            held = [(tp.topic, tp.partition, offset, -1, "") for tp, offset in offsets.items()]
            coordinator = self._coordinator
            results = await self._call("TxnOffsetCommit", lambda: coordinator.txn_offset_commit(
                txn_id, group_id, pid, epoch, held,
                generation_id=generation_id, member_id=member_id,
            ))  # fmt: skip
            refused = [r for r in results if r.error_code != 0]
            if refused:
                names = ", ".join(f"{r.topic}/{r.partition}" for r in refused)
                raise TransactionAbortedError(
                    txn_id, f"TxnOffsetCommit refused the offsets of {names} "
                    f"(Kafka error {refused[0].error_code})")
        if not self.open:
            return
        await self._call("EndTxn", lambda: self._coordinator.end_txn(
            self.transactional_id, self.producer_id, self.producer_epoch, True))
        self._partitions.clear()
        self.open = False

    async def abort(self) -> None:
        """EndTxn(abort) if a transaction is open, then a new epoch."""
        if self.open:
            with contextlib.suppress(TransactionAbortedError):  # the new epoch aborts it too
                await self._call("EndTxn", lambda: self._coordinator.end_txn(
                    self.transactional_id, self.producer_id, self.producer_epoch, False))
        await self.init()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried while the coordinator says so; its errors made ours."""
        deadline = time.monotonic() + RETRY_S_MAX
        while True:
            try:
                return await call()
            except (ProducerFencedError, FencedInstanceIdError) as error:
                raise TransactionFencedError(self.transactional_id, f"{what}: {error}") from error
            except TransactionError as error:
                if not error.retriable or time.monotonic() > deadline:
                    raise TransactionAbortedError(
                        self.transactional_id, f"{what}: {type(error).__name__}: {error}"
                    ) from error
            except LogError as error:
                raise TransactionAbortedError(
                    self.transactional_id, f"{what}: {type(error).__name__}: {error}"
                ) from error
            await asyncio.sleep(RETRY_BACKOFF_S)
