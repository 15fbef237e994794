"""The transaction coordinator: Kafka's transactions (KIP-98, KIP-360, KIP-447) over the log.

Owned by :class:`~streamer.log.broker.Broker` (``broker.transactions``), started and closed
with it. The Kafka-protocol handlers call it, and so does the embedded transport, in
process::

    transactions = broker.transactions
    producer_id, epoch = await transactions.init_producer_id("app-1", 60_000)
    await transactions.add_partitions("app-1", producer_id, epoch, [("out", 0)])
    ...  # append transactional batches of (producer_id, epoch) to out/0
    await transactions.add_offsets("app-1", producer_id, epoch, "group")
    await transactions.txn_offset_commit("app-1", "group", producer_id, epoch,
                                         [("in", 0, 42, -1, None)])
    await transactions.end_txn("app-1", producer_id, epoch, commit=True)

Refusals are typed exceptions (:mod:`.errors`); the handlers turn them into Kafka's codes.

**EndTxn** writes the decision (PrepareCommit or PrepareAbort) durably to the state topic,
then a COMMIT or ABORT marker durably to every partition of the transaction, then, for a
commit, the transaction's consumer offsets to their groups (the group coordinator's offset
store), then CompleteCommit or CompleteAbort (not waited for: a restart that finds only the
decision completes it again, which changes nothing), and only then answers. So once
``end_txn`` returns, read_committed readers see the records and the groups' offsets are the
committed ones. (Kafka answers after the decision and writes the markers afterwards;
answering later is simpler and no client can tell, but by the latency.) If a marker cannot
be written (a partition offline), the decision stays durable, ``end_txn`` answers, and the
background task finishes the job; meanwhile the transactional id answers
CONCURRENT_TRANSACTIONS. A retried EndTxn of a completed transaction answers OK.

**Fencing.** InitProducerId for a known transactional id bumps the epoch; one with a
transaction open first aborts it with the epoch bumped once more, so the markers carry the
new epoch and the old producer's next Produce gets ``ProducerFencedError`` from the
partition, its next coordinator call :class:`ProducerFencedError` here. At the last epochs
the id is rotated (a new producer id). A producer that names its current id and epoch
(InitProducerId v3+, KIP-360) gets its epoch bumped to recover from an abortable error; a
retry of that bump whose answer was lost gets the same answer.

**Timeouts.** A background task aborts, fencing its producer, every transaction open longer
than its timeout (checked every ``timeout_check_interval_ms``), as Kafka does.

**Restart.** The state topic (:mod:`.store`) is replayed on start; until then every call
raises :class:`CoordinatorLoadInProgressError`. Transactions found in PrepareCommit or
PrepareAbort are completed (markers rewritten: a second marker changes nothing), open ones
keep their timeout from their start time.

Each transactional id's calls run one at a time (a lock per id), each to its end even if
its caller goes away (a client disconnecting), so a state change is never left half made.

Not kept: ``transactional.id.expiration.ms`` (ids are remembered until the state topic is
deleted), KIP-890's per-transaction epoch bump, and OffsetFetch's ``require_stable``
(OffsetFetch v7 is not served).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..batch import HEADER_BYTES, parse_header
from ..errors import LogError
from ..groups.offsets import fits_string, write_error_code
from ..groups.results import CommitResult
from ..protocol.error_codes import ErrorCode
from .completion import TransactionCompletion
from .errors import (
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupFencedError,
    InvalidGroupIdError,
    InvalidProducerIdMappingError,
    InvalidTransactionTimeoutError,
    InvalidTxnRequestError,
    InvalidTxnStateError,
    TransactionPartitionsError,
)
from .state import EPOCH_MAX, PendingOffset, TopicPartition, Transaction, TransactionState
from .store import TransactionLog

if TYPE_CHECKING:
    from ..broker import Broker

__all__ = ["TransactionCoordinator", "TransactionStatistics"]

logger = logging.getLogger("streamer.log.transactions")

T = TypeVar("T")

MAX_TRANSACTION_TIMEOUT_MS = 900_000  # Kafka's transaction.max.timeout.ms
# Kafka checks every 10 s (transaction.abort.timed.out.transaction.cleanup.interval.ms); a
# pass here is a scan of a dict, so it runs often and a timeout is enforced within a second.
TIMEOUT_CHECK_INTERVAL_MS = 1_000

# (topic, partition, offset, leader epoch, metadata), as TxnOffsetCommit carries them
OffsetCommit = tuple[str, int, int, int, str | None]


@dataclass(frozen=True, slots=True)
class TransactionStatistics:
    state_topic: str
    transactional_ids: int
    ongoing: int  # transactions open now
    completing: int  # decided, their markers being written


class TransactionCoordinator(TransactionCompletion):
    """Transactional ids, their producers and their transactions; see the module docstring.

    Ending decided transactions and the timeouts are in :mod:`.completion`.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        max_timeout_ms: int = MAX_TRANSACTION_TIMEOUT_MS,
        timeout_check_interval_ms: int = TIMEOUT_CHECK_INTERVAL_MS,
    ) -> None:
        if max_timeout_ms <= 0 or timeout_check_interval_ms <= 0:
            raise ValueError("expected max_timeout_ms > 0 and timeout_check_interval_ms > 0")
        self.broker = broker
        self.clock = broker.log.clock  # one source of time for the whole broker
        self.max_timeout_ms = max_timeout_ms
        self.timeout_check_interval_ms = timeout_check_interval_ms
        self.store = TransactionLog(broker.log, self.clock)
        self._transactions: dict[str, Transaction] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._loaded = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the state topic, finish the transactions it left decided, start the timer."""
        assert not self._loaded and not self._closed, "start() once"
        self._transactions = await asyncio.to_thread(self.store.load)
        self._loaded = True
        for txn in list(self._transactions.values()):
            if txn.state.completing:
                await self._run(self._finish_decided(txn.transactional_id))
        self._timer = asyncio.get_running_loop().create_task(self._run_timers())

    async def close(self) -> None:
        """Refuse new calls, stop the timer and let the calls under way finish their writes.

        The log stays open: it belongs to the broker.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def transaction(self, transactional_id: str) -> Transaction | None:
        """The id's current state, or None if it is unknown."""
        return self._transactions.get(transactional_id)

    def statistics(self) -> TransactionStatistics:
        states = [txn.state for txn in self._transactions.values()]
        return TransactionStatistics(
            self.store.topic,
            len(states),
            states.count(TransactionState.ONGOING),
            sum(state.completing for state in states),
        )

    # -- InitProducerId -------------------------------------------------------------------

    async def init_producer_id(
        self,
        transactional_id: str | None,
        transaction_timeout_ms: int,
        producer_id: int = -1,
        producer_epoch: int = -1,
    ) -> tuple[int, int]:
        """A producer id and epoch: fresh for a new (or no) transactional id, else the id's
        with its epoch bumped, any open transaction aborted first (the old producer fenced).

        ``producer_id`` and ``producer_epoch`` (InitProducerId v3+, KIP-360): the caller's
        current ones, to have the epoch bumped after an abortable error.
        """
        if (producer_id < 0) != (producer_epoch < 0):
            raise InvalidTxnRequestError(
                f"producer id {producer_id} and epoch {producer_epoch}: give both or neither"
            )
        if transactional_id is None:
            return await self._idempotent(producer_id, producer_epoch)
        if not transactional_id or not fits_string(transactional_id):
            raise InvalidTxnRequestError("a transactional id is 1 to 32767 bytes of UTF-8")
        if not 0 < transaction_timeout_ms <= self.max_timeout_ms:
            raise InvalidTransactionTimeoutError(
                f"transaction timeout {transaction_timeout_ms} ms is not within 1 and "
                f"{self.max_timeout_ms} ms (transaction.max.timeout.ms)"
            )
        self._check_serving()
        return await self._run(
            self._init(transactional_id, transaction_timeout_ms, producer_id, producer_epoch)
        )

    async def _idempotent(self, producer_id: int, producer_epoch: int) -> tuple[int, int]:
        """An idempotent producer's id: its epoch bumped (KIP-360) while it can be, else new."""
        if producer_id >= 0 and producer_epoch < EPOCH_MAX:
            return producer_id, producer_epoch + 1
        return await asyncio.to_thread(self.broker.cluster.next_producer_id), 0

    async def _init(
        self, transactional_id: str, timeout_ms: int, expected_id: int, expected_epoch: int
    ) -> tuple[int, int]:
        async with self._lock(transactional_id):
            self._check_serving()
            txn = self._transactions.get(transactional_id)
            if txn is None:
                producer_id = await asyncio.to_thread(self.broker.cluster.next_producer_id)
                txn = Transaction(
                    transactional_id, producer_id, 0, timeout_ms, TransactionState.EMPTY,
                    self.clock.time_ms(),
                )  # fmt: skip
                await self._save(txn)
                return producer_id, 0
            if expected_id >= 0 and not txn.may_resume(expected_id, expected_epoch):
                raise txn.fenced_error(expected_id, expected_epoch)
            txn = await self._settle(txn)
            if txn.epoch_exhausted and expected_epoch in (-1, txn.producer_epoch):
                producer_id = await asyncio.to_thread(self.broker.cluster.next_producer_id)
                remember = expected_epoch >= 0
                txn = txn.rotated(producer_id, timeout_ms, self.clock.time_ms(), remember=remember)
            elif expected_epoch in (-1, txn.producer_epoch):
                txn = txn.bumped(timeout_ms, self.clock.time_ms(), remember=expected_epoch >= 0)
            elif expected_epoch == txn.last_producer_epoch:
                return txn.producer_id, txn.producer_epoch  # a retry: its bump is done
            else:
                raise txn.fenced_error(expected_id, expected_epoch)
            await self._save(txn)
            return txn.producer_id, txn.producer_epoch

    async def _settle(self, txn: Transaction) -> Transaction:
        """Finish a decided transaction, abort (fencing) an open one; raises
        :class:`ConcurrentTransactionsError` if its markers cannot be written now."""
        if txn.state is TransactionState.ONGOING:
            logger.info(
                "transactional id %r: a new producer aborts the open transaction of "
                "producer %d epoch %d", txn.transactional_id, txn.producer_id, txn.producer_epoch,
            )
            txn = txn.fenced(self.clock.time_ms())
            await self._save(txn)
        if txn.state.completing and not await self._finish(txn):
            raise ConcurrentTransactionsError(
                f"transactional id {txn.transactional_id!r}: its last transaction is still "
                "being completed; retry"
            )
        return self._transactions[txn.transactional_id]

    # -- AddPartitionsToTxn, AddOffsetsToTxn ----------------------------------------------

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[TopicPartition],
    ) -> None:
        """Add ``partitions`` to the transaction (starting one if none is open), before the
        producer writes to them.

        Raises :class:`TransactionPartitionsError` (nothing added) if a partition does not
        exist or is internal.
        """
        wanted = frozenset(partitions)
        self._current(transactional_id, producer_id, producer_epoch)
        if not wanted:
            return
        self._check_partitions(wanted)
        await self._run(self._add(transactional_id, producer_id, producer_epoch, wanted, None))

    async def add_offsets(
        self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str
    ) -> None:
        """Add ``group_id`` to the transaction, before :meth:`txn_offset_commit` for it."""
        if not fits_string(group_id):
            raise InvalidGroupIdError(f"group id of {len(group_id)} characters cannot be stored")
        self._current(transactional_id, producer_id, producer_epoch)
        await self._run(
            self._add(transactional_id, producer_id, producer_epoch, frozenset(), group_id)
        )

    async def _add(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: frozenset[TopicPartition],
        group_id: str | None,
    ) -> None:
        async with self._lock(transactional_id):
            txn = self._current(transactional_id, producer_id, producer_epoch)
            already = txn.state is TransactionState.ONGOING and partitions <= txn.partitions
            if already and (group_id is None or group_id in txn.offsets):
                return
            await self._save(txn.added(self.clock.time_ms(), partitions, group_id))

    def _check_partitions(self, partitions: frozenset[TopicPartition]) -> None:
        internal = {self.store.topic, self.broker.groups.offsets.topic}
        errors = {}
        for topic, partition in partitions:
            if topic in internal:
                errors[(topic, partition)] = ErrorCode.INVALID_TOPIC_EXCEPTION
            elif not 0 <= partition < self.broker.partition_count(topic):
                errors[(topic, partition)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if errors:
            named = ", ".join(f"{topic}/{partition}" for topic, partition in sorted(errors))
            raise TransactionPartitionsError(
                f"cannot add {named} to a transaction: unknown or internal", errors
            )

    # -- TxnOffsetCommit ------------------------------------------------------------------

    async def txn_offset_commit(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: Sequence[OffsetCommit],
        *,
        generation_id: int = -1,
        member_id: str = "",
        group_instance_id: str | None = None,
    ) -> tuple[CommitResult, ...]:
        """Hold ``(topic, partition, offset, leader_epoch, metadata)`` for ``group_id`` in the
        transaction: applied to the group if it commits, dropped if it aborts. Durable once
        this returns; an offset refused for its own sake (a bad name, metadata too large)
        has its code in the result, the others are held.

        ``generation_id``, ``member_id``, ``group_instance_id`` (TxnOffsetCommit v3+,
        KIP-447): when given, the caller must be the group's current member, else
        :class:`GroupFencedError`.
        """
        self._current(transactional_id, producer_id, producer_epoch)
        return await self._run(
            self._commit_offsets(
                transactional_id, group_id, producer_id, producer_epoch, offsets,
                (generation_id, member_id, group_instance_id),
            )  # fmt: skip
        )

    async def _commit_offsets(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: Sequence[OffsetCommit],
        member: tuple[int, str, str | None],
    ) -> tuple[CommitResult, ...]:
        async with self._lock(transactional_id):
            txn = self._current(transactional_id, producer_id, producer_epoch)
            if txn.state is not TransactionState.ONGOING or group_id not in txn.offsets:
                raise InvalidTxnStateError(
                    f"transactional id {transactional_id!r}: group {group_id!r} is not in the "
                    "open transaction (AddOffsetsToTxn comes first)"
                )
            self._check_member(group_id, *member)
            check = self.broker.groups.offset_error
            codes = [check(topic, p, metadata) for topic, p, _, _, metadata in offsets]
            held = {
                (topic, p): PendingOffset(offset, leader_epoch, metadata or "")
                for (topic, p, offset, leader_epoch, metadata), code in zip(
                    offsets, codes, strict=True
                )
                if code is ErrorCode.NONE
            }
            if held:
                await self._save(txn.with_offsets(group_id, held, self.clock.time_ms()))
            return tuple(
                CommitResult(o[0], o[1], code) for o, code in zip(offsets, codes, strict=True)
            )

    def _check_member(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> None:
        code = self.broker.groups.txn_commit_error(
            group_id, generation_id, member_id, group_instance_id
        )
        where = f"group {group_id!r} member {member_id!r} generation {generation_id}"
        if code is ErrorCode.NONE:
            return
        if code is ErrorCode.FENCED_INSTANCE_ID:
            raise FencedInstanceIdError(
                f"{where}: instance {group_instance_id!r} was taken by a newer member", code
            )
        if code in (ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID):
            raise GroupFencedError(f"{where}: not the group's current member ({code.name})", code)
        if code is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
            raise CoordinatorLoadInProgressError("the group coordinator is loading")
        if code is ErrorCode.INVALID_GROUP_ID:
            raise InvalidGroupIdError(f"group id of {len(group_id)} characters cannot be stored")
        raise CoordinatorNotAvailableError(f"{where}: {code.name}", code)

    # -- EndTxn ---------------------------------------------------------------------------

    async def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> None:
        """Commit or abort the open transaction; returns once its markers (and, for a
        commit, its offsets) are durable. A retry of a completed end returns at once."""
        txn = self._current(transactional_id, producer_id, producer_epoch, settled=False)
        txn.must_end(commit)
        await self._run(self._end(transactional_id, producer_id, producer_epoch, commit))

    async def _end(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> None:
        async with self._lock(transactional_id):
            txn = self._current(transactional_id, producer_id, producer_epoch, settled=False)
            if txn.must_end(commit):
                prepared = txn.prepared(commit, self.clock.time_ms())
                await self._save(prepared)
                await self._finish(prepared)  # the decision is durable: done or retried

    # -- Produce --------------------------------------------------------------------------

    def verify_produce(
        self, transactional_id: str, topic: str, partition: int, records: bytes
    ) -> ErrorCode:
        """Whether Produce may append ``records`` for ``transactional_id`` (KIP-890's
        partition verification, made in process): a transactional batch at the producer's
        current epoch goes only to a partition of its open transaction.

        So a write that arrives after its transaction ended (a request the client gave up
        on, delivered late) is refused (INVALID_TXN_STATE) instead of opening a transaction
        in that partition that nobody would end. An older epoch is left to the partition,
        which fences it; anything that is not a transactional batch, to the append checks.
        """
        if len(records) < HEADER_BYTES or not self._loaded or self._closed:
            return ErrorCode.NONE
        header = parse_header(records)
        if not header.is_transactional:
            return ErrorCode.NONE
        txn = self._transactions.get(transactional_id)
        if txn is None or txn.producer_id != header.producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if header.producer_epoch < txn.producer_epoch:
            return ErrorCode.NONE
        in_transaction = txn.state is TransactionState.ONGOING and (topic, partition) in (
            txn.partitions
        )
        if header.producer_epoch == txn.producer_epoch and in_transaction:
            return ErrorCode.NONE
        return ErrorCode.INVALID_TXN_STATE

    # -- helpers --------------------------------------------------------------------------

    def _check_serving(self) -> None:
        if self._closed:
            raise CoordinatorNotAvailableError(
                "the transaction coordinator is closed", ErrorCode.NOT_COORDINATOR
            )
        if not self._loaded:
            raise CoordinatorLoadInProgressError("the transaction coordinator is loading")

    def _current(
        self, transactional_id: str, producer_id: int, producer_epoch: int, *, settled: bool = True
    ) -> Transaction:
        """The id's state, if this producer is its current one; with ``settled``, refuses
        while its last transaction is being completed."""
        self._check_serving()
        txn = self._transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            raise InvalidProducerIdMappingError(
                f"transactional id {transactional_id!r} does not belong to producer {producer_id}"
            )
        if producer_epoch != txn.producer_epoch:
            raise txn.fenced_error(producer_id, producer_epoch)
        if settled and txn.state.completing:
            raise ConcurrentTransactionsError(
                f"transactional id {transactional_id!r}: its last transaction is being "
                "completed; retry"
            )
        return txn

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = asyncio.Lock()
        return lock

    async def _save(self, txn: Transaction, *, durable: bool = True) -> None:
        """Write ``txn`` (durably unless told), then make it the id's state."""
        try:
            await self.store.write(txn, durable=durable)
        except LogError as error:
            raise CoordinatorNotAvailableError(
                f"transactional id {txn.transactional_id!r}: writing its state failed: {error}",
                write_error_code(error),
            ) from error
        self._transactions[txn.transactional_id] = txn

    async def _run(self, operation: Coroutine[Any, Any, T]) -> T:
        """Run ``operation`` to its end even if the caller is cancelled."""
        task = asyncio.get_running_loop().create_task(operation)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # its caller may be gone: the error is not left unretrieved

