"""Ending decided transactions and aborting timed-out ones: the coordinator's writes to the
partitions and to the groups.

A decided transaction (PrepareCommit or PrepareAbort, durable in the state topic) is
finished by a COMMIT or ABORT marker in each of its partitions (written concurrently, each
durable), then, for a commit, its consumer offsets written to their groups' offset store,
then CompleteCommit or CompleteAbort. A failure of the log under it (a partition offline)
leaves the decision in place, to be finished by the next timer pass or the next start.
Writing a marker or the offsets twice changes nothing, so finishing is safe to repeat.

The timer aborts every transaction open past its timeout, with its producer's epoch
bumped, so the markers fence the producer in every partition it wrote to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import LogError, ProducerFencedError, UnknownTopicOrPartitionError
from ..groups.offsets import CommittedOffset
from .state import Transaction, TransactionState

if TYPE_CHECKING:
    from ..broker import Broker
    from ..clock import Clock

__all__ = ["COORDINATOR_EPOCH", "TransactionCompletion"]

logger = logging.getLogger("streamer.log.transactions")

T = TypeVar("T")

# Markers carry the coordinator's epoch so a partition can refuse a deposed coordinator's;
# one node's coordinator is never deposed.
COORDINATOR_EPOCH = 0


class TransactionCompletion:
    # Set up by TransactionCoordinator.__init__ and start().
    broker: Broker
    clock: Clock
    timeout_check_interval_ms: int
    _transactions: dict[str, Transaction]
    _closed: bool

    if TYPE_CHECKING:  # provided by TransactionCoordinator

        def _lock(self, transactional_id: str) -> asyncio.Lock: ...

        async def _save(self, txn: Transaction, *, durable: bool = True) -> None: ...

        async def _run(self, operation: Coroutine[Any, Any, T]) -> T: ...

    async def _finish(self, txn: Transaction) -> bool:
        """Markers, offsets, then Complete*; False (logged) if the log failed under it."""
        commit = txn.state is TransactionState.PREPARE_COMMIT
        try:
            await self._write_markers(txn, commit)
            if commit:
                await self._apply_offsets(txn)
            # Not waited for: if a crash loses it, the restart finds the decision and
            # completes it again (markers and offsets rewritten, changing nothing), and
            # any later durable record of this id (same partition) fsyncs it first.
            await self._save(txn.completed(self.clock.time_ms()), durable=False)
        except LogError as error:
            logger.error(
                "transactional id %r: completing its %s failed; retried in the background: %s",
                txn.transactional_id, "commit" if commit else "abort", error,
            )
            return False
        return True

    async def _write_markers(self, txn: Transaction, commit: bool) -> None:
        written = await asyncio.gather(
            *(self._write_marker(txn, topic, p, commit) for topic, p in sorted(txn.partitions)),
            return_exceptions=True,
        )
        for result in written:
            if isinstance(result, BaseException):
                raise result

    async def _write_marker(
        self, txn: Transaction, topic: str, partition: int, commit: bool
    ) -> None:
        try:
            await self.broker.write_marker(
                topic, partition, txn.producer_id, txn.producer_epoch, commit, COORDINATOR_EPOCH
            )
        except UnknownTopicOrPartitionError:
            logger.warning(
                "transactional id %r: %s/%d was deleted; no marker written there",
                txn.transactional_id, topic, partition,
            )
        except ProducerFencedError as error:  # a later epoch of this producer wrote there
            logger.error("transactional id %r: marker refused: %s", txn.transactional_id, error)

    async def _apply_offsets(self, txn: Transaction) -> None:
        now_ms = self.clock.time_ms()
        for group_id, pending in sorted(txn.offsets.items()):
            if pending:
                await self.broker.groups.offsets.write(
                    group_id,
                    [
                        (topic, p, CommittedOffset(o.offset, o.leader_epoch, o.metadata, now_ms))
                        for (topic, p), o in sorted(pending.items())
                    ],
                )

    async def _finish_decided(self, transactional_id: str) -> None:
        async with self._lock(transactional_id):
            txn = self._transactions.get(transactional_id)
            if txn is not None and txn.state.completing:
                await self._finish(txn)

    # -- timeouts -------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        while True:
            await asyncio.sleep(self.timeout_check_interval_ms / 1000)
            try:
                await self.abort_timed_out()
            except Exception:  # each abort logs its own log errors; this is a bug
                logger.exception("checking transaction timeouts failed")

    async def abort_timed_out(self) -> int:
        """Abort (fencing the producer) every transaction open past its timeout, and retry
        the completion of decided ones that failed; returns how many were aborted."""
        aborted = 0
        for transactional_id, txn in list(self._transactions.items()):
            if self._closed:
                break
            if self._lock(transactional_id).locked():
                continue  # a call is changing it right now
            if txn.state is TransactionState.ONGOING and self._expired(txn):
                aborted += await self._run(self._expire(transactional_id))
            elif txn.state.completing:
                await self._run(self._finish_decided(transactional_id))
        return aborted

    def _expired(self, txn: Transaction) -> bool:
        return self.clock.time_ms() - txn.start_ms > txn.timeout_ms

    async def _expire(self, transactional_id: str) -> int:
        async with self._lock(transactional_id):
            txn = self._transactions[transactional_id]
            if txn.state is not TransactionState.ONGOING or not self._expired(txn):
                return 0
            logger.info(
                "transactional id %r: transaction open for over %d ms, aborted; producer %d "
                "epoch %d fenced", transactional_id, txn.timeout_ms, txn.producer_id,
                txn.producer_epoch,
            )  # fmt: skip
            fenced = txn.fenced(self.clock.time_ms())
            await self._save(fenced)
            await self._finish(fenced)
            return 1
