"""The transaction coordinator in process, on a real log folder: its state machine, fencing,
timeouts, transactional offsets, durable state across restarts and crashes, error codes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from streamer.log import Log, ManualClock, MemoryFilesystem, PartitionLog, ProducerFencedError
from streamer.log.batch import split_batches
from streamer.log.broker import INTERNAL_TOPICS, Broker
from streamer.log.protocol.error_codes import ErrorCode
from streamer.log.transactions import (
    TRANSACTION_STATE_TOPIC,
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
    PendingOffset,
    Transaction,
    TransactionPartitionsError,
    TransactionState,
)
from streamer.log.transactions.state import EPOCH_MAX
from streamer.log.transactions.store import decode, encode_key, encode_value

from .batches import Record, build_batch
from .groups.consumers import Consumer, fetched, form_group

T = TypeVar("T")

TXN = "txn-1"
OUT = "out"
IN = "in"
GROUP = "group"
TIMEOUT_MS = 60_000


def run(scenario: Awaitable[T]) -> T:
    async def bounded() -> T:  # a hang fails the test instead of the suite
        return await asyncio.wait_for(scenario, timeout=20)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def started(
    root: str | Path, *, fs: MemoryFilesystem | None = None, clock: ManualClock | None = None
) -> AsyncIterator[Broker]:
    """A started broker on the log at ``root``; closed (and the log with it) at the end."""
    log = Log.open(root, fs=fs, clock=clock)
    broker = Broker(log)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


def create_topics(broker: Broker) -> None:
    for topic in (OUT, IN):
        if not broker.log.has_topic(topic):
            broker.log.create_topic(topic, 2)


class Producer:
    """A transactional producer as a client drives the coordinator, writing to the log."""

    def __init__(self, broker: Broker, transactional_id: str = TXN) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.producer_id = -1
        self.epoch = -1
        self.sequences: dict[tuple[str, int], int] = {}

    async def init(self, timeout_ms: int = TIMEOUT_MS) -> None:
        self.producer_id, self.epoch = await self.broker.transactions.init_producer_id(
            self.transactional_id, timeout_ms
        )
        self.sequences.clear()

    @property
    def ids(self) -> tuple[str, int, int]:
        return self.transactional_id, self.producer_id, self.epoch

    async def send(self, topic: str, partition: int, *values: str) -> int:
        """Add the partition to the transaction, append one transactional batch of
        ``values``; returns its base offset."""
        await self.broker.transactions.add_partitions(*self.ids, [(topic, partition)])
        sequence = self.sequences.get((topic, partition), 0)
        batch = build_batch(
            [Record(None, value.encode()) for value in values],
            producer_id=self.producer_id, producer_epoch=self.epoch,
            base_sequence=sequence, transactional=True,
        )  # fmt: skip
        self.sequences[(topic, partition)] = sequence + len(values)
        return self.broker.log.partition(topic, partition).append(batch).base_offset

    async def commit_offsets(self, *offsets: tuple[str, int, int], **member: object) -> None:
        await self.broker.transactions.add_offsets(*self.ids, GROUP)
        results = await self.broker.transactions.txn_offset_commit(
            self.transactional_id, GROUP, self.producer_id, self.epoch,
            [(topic, p, offset, -1, None) for topic, p, offset in offsets],
            **member,  # type: ignore[arg-type]
        )  # fmt: skip
        assert [r.error_code for r in results] == [ErrorCode.NONE] * len(offsets)

    async def end(self, commit: bool) -> None:
        await self.broker.transactions.end_txn(*self.ids, commit)


def batches(partition: PartitionLog) -> list[tuple[int, bool, bool, int]]:
    """Every batch: (base offset, control, transactional, producer id)."""
    data = partition.read(partition.log_start_offset, 1 << 24).records
    return [
        (header.base_offset, header.is_control, header.is_transactional, header.producer_id)
        for _, header in split_batches(data)
    ]


def markers(partition: PartitionLog) -> list[tuple[int, str]]:
    """(offset, "commit" or "abort") of each control batch."""
    data = partition.read(partition.log_start_offset, 1 << 24).records
    found = []
    for position, header in split_batches(data):
        if header.is_control:
            (record,) = DefaultRecordBatch(data[position : position + header.size])
            kind = int.from_bytes(record.key[2:4], "big")
            found.append((header.base_offset, "commit" if kind == 1 else "abort"))
    return found


def state(broker: Broker, transactional_id: str = TXN) -> Transaction:
    txn = broker.transactions.transaction(transactional_id)
    assert txn is not None
    return txn


# -- the state machine ----------------------------------------------------------------------


def test_commit_writes_markers_and_applies_the_offsets(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            assert state(broker).state is TransactionState.EMPTY
            first = await producer.send(OUT, 0, "a", "b")
            await producer.send(OUT, 1, "c")
            await producer.send(OUT, 0, "d")
            await producer.commit_offsets((IN, 0, 42), (IN, 1, 7))
            out0 = broker.log.partition(OUT, 0)
            assert state(broker).state is TransactionState.ONGOING
            assert state(broker).partitions == {(OUT, 0), (OUT, 1)}
            assert out0.last_stable_offset == first  # held back from read_committed
            assert fetched(broker.groups) == {}  # pending until the commit
            assert broker.transactions.statistics().ongoing == 1

            await producer.end(commit=True)
            assert state(broker).state is TransactionState.COMPLETE_COMMIT
            assert state(broker).partitions == frozenset() and not state(broker).offsets
            assert markers(out0) == [(3, "commit")]
            assert markers(broker.log.partition(OUT, 1)) == [(1, "commit")]
            assert out0.last_stable_offset == out0.high_watermark == 4
            assert out0.aborted_transactions(0, 4) == []
            assert fetched(broker.groups) == {(IN, 0): 42, (IN, 1): 7}
            assert broker.transactions.statistics().ongoing == 0

            await producer.end(commit=True)  # a retry of a completed end answers OK
            assert markers(out0) == [(3, "commit")]  # and writes nothing
            with pytest.raises(InvalidTxnStateError, match="cannot abort in state Complete"):
                await producer.end(commit=False)

            # The next transaction starts with the next AddPartitions, at the same epoch.
            await producer.send(OUT, 0, "e")
            assert state(broker).state is TransactionState.ONGOING
            assert state(broker).partitions == {(OUT, 0)}
            assert state(broker).producer_epoch == producer.epoch

    run(scenario())


def test_abort_marks_the_records_aborted_and_drops_the_offsets(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            first = await producer.send(OUT, 0, "a", "b")
            await producer.commit_offsets((IN, 0, 42))
            await producer.end(commit=False)
            out0 = broker.log.partition(OUT, 0)
            assert state(broker).state is TransactionState.COMPLETE_ABORT
            assert markers(out0) == [(2, "abort")]
            assert out0.aborted_transactions(0, 3) == [(producer.producer_id, first)]
            assert out0.last_stable_offset == 3
            assert fetched(broker.groups) == {}
            await producer.end(commit=False)  # retried: OK
            with pytest.raises(InvalidTxnStateError):
                await producer.end(commit=True)

    run(scenario())


def test_a_transaction_of_offsets_only_commits_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            await producer.commit_offsets((IN, 1, 5))
            await producer.commit_offsets((IN, 1, 9), (IN, 0, 3))  # later offsets win
            await producer.end(commit=True)
            assert fetched(broker.groups) == {(IN, 0): 3, (IN, 1): 9}

    run(scenario())


# -- fencing --------------------------------------------------------------------------------


def test_a_second_init_fences_the_first_producer_everywhere(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            zombie = Producer(broker)
            await zombie.init()
            first = await zombie.send(OUT, 0, "zombie")
            await zombie.commit_offsets((IN, 0, 1))

            successor = Producer(broker)
            await successor.init()
            assert successor.producer_id == zombie.producer_id
            assert successor.epoch == zombie.epoch + 2  # one bump fences, one is its own
            out0 = broker.log.partition(OUT, 0)
            # The zombie's open transaction was aborted, with the fencing epoch.
            assert markers(out0) == [(1, "abort")]
            assert out0.aborted_transactions(0, 2) == [(zombie.producer_id, first)]
            assert out0.last_stable_offset == 2
            assert fetched(broker.groups) == {}
            assert state(broker).state is TransactionState.EMPTY

            with pytest.raises(ProducerFencedError, match="fenced"):
                await zombie.send(OUT, 1, "late")
            with pytest.raises(ProducerFencedError):
                await broker.transactions.add_offsets(*zombie.ids, GROUP)
            with pytest.raises(ProducerFencedError):
                await broker.transactions.txn_offset_commit(
                    TXN, GROUP, zombie.producer_id, zombie.epoch, [(IN, 0, 2, -1, None)]
                )
            with pytest.raises(ProducerFencedError):
                await zombie.end(commit=True)
            # Its writes are refused by the partitions too, from the markers' epoch on.
            late = build_batch(
                1, producer_id=zombie.producer_id, producer_epoch=zombie.epoch,
                base_sequence=1, transactional=True,
            )  # fmt: skip
            with pytest.raises(ProducerFencedError):
                out0.append(late)

            await successor.send(OUT, 0, "fresh")
            await successor.end(commit=True)
            assert markers(out0) == [(1, "abort"), (3, "commit")]

    run(scenario())


def test_kip360_epoch_bumps_retries_and_rotation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            init = broker.transactions.init_producer_id
            producer_id, epoch = await init(TXN, TIMEOUT_MS)
            assert epoch == 0
            # The producer names itself to recover from an abortable error.
            assert await init(TXN, TIMEOUT_MS, producer_id, 0) == (producer_id, 1)
            # Its answer was lost: the retry gets the same answer, no second bump.
            assert await init(TXN, TIMEOUT_MS, producer_id, 0) == (producer_id, 1)
            assert await init(TXN, TIMEOUT_MS, producer_id, 1) == (producer_id, 2)
            with pytest.raises(ProducerFencedError):  # an epoch older than the last
                await init(TXN, TIMEOUT_MS, producer_id, 0)
            with pytest.raises(ProducerFencedError):  # someone else's producer id
                await init(TXN, TIMEOUT_MS, producer_id + 100, 2)
            # At the last epochs, a bump gives a new producer id.
            txn = dataclasses.replace(state(broker), producer_epoch=EPOCH_MAX - 1)
            await broker.transactions._save(txn)
            rotated = await init(TXN, TIMEOUT_MS, producer_id, EPOCH_MAX - 1)
            assert rotated[0] != producer_id and rotated[1] == 0
            assert await init(TXN, TIMEOUT_MS, producer_id, EPOCH_MAX - 1) == rotated
            assert await init(TXN, TIMEOUT_MS) == (rotated[0], 1)  # without ids: a bump

    run(scenario())


def test_idempotent_producers_get_ids_without_a_transactional_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            init = broker.transactions.init_producer_id
            one, two = await init(None, TIMEOUT_MS), await init(None, TIMEOUT_MS)
            assert one[1] == two[1] == 0 and one[0] != two[0]
            assert await init(None, TIMEOUT_MS, one[0], 4) == (one[0], 5)
            fresh = await init(None, TIMEOUT_MS, one[0], EPOCH_MAX)
            assert fresh[0] not in (one[0], two[0]) and fresh[1] == 0
            assert broker.transactions.statistics().transactional_ids == 0

    run(scenario())


# -- timeouts -------------------------------------------------------------------------------


def test_a_timed_out_transaction_is_aborted_and_its_producer_fenced(tmp_path: Path) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with started(tmp_path, clock=clock) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init(timeout_ms=1_000)
            first = await producer.send(OUT, 0, "slow")
            clock.advance(600)
            await producer.send(OUT, 1, "slower")  # the timeout runs from the start
            assert await broker.transactions.abort_timed_out() == 0
            clock.advance(401)
            assert await broker.transactions.abort_timed_out() == 1
            assert state(broker).state is TransactionState.COMPLETE_ABORT
            assert state(broker).producer_epoch == producer.epoch + 1
            out0 = broker.log.partition(OUT, 0)
            assert out0.aborted_transactions(0, 2) == [(producer.producer_id, first)]
            assert markers(broker.log.partition(OUT, 1)) == [(1, "abort")]
            with pytest.raises(ProducerFencedError):
                await producer.end(commit=True)
            assert await broker.transactions.abort_timed_out() == 0
            # A new incarnation carries on.
            await producer.init()
            await producer.send(OUT, 0, "again")
            await producer.end(commit=True)

    run(scenario())


def test_the_background_task_enforces_timeouts(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = Log.open(tmp_path)
        broker = Broker(log)
        broker.transactions.timeout_check_interval_ms = 20
        await broker.start()
        try:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init(timeout_ms=100)
            await producer.send(OUT, 0, "forgotten")
            while state(broker).state is not TransactionState.COMPLETE_ABORT:
                await asyncio.sleep(0.02)
            assert broker.log.partition(OUT, 0).last_stable_offset == 2
        finally:
            await broker.close()

    run(scenario())


# -- consumer-group fencing (KIP-447) -------------------------------------------------------


def test_offsets_need_the_current_member_and_generation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            member = Consumer(broker.groups, "worker", group_instance_id="worker-0")
            await form_group([member])
            producer = Producer(broker)
            await producer.init()
            current = {"generation_id": member.generation_id, "member_id": member.member_id,
                       "group_instance_id": "worker-0"}  # fmt: skip
            await producer.commit_offsets((IN, 0, 10), **current)
            stale = {**current, "generation_id": member.generation_id - 1}
            with pytest.raises(GroupFencedError) as refused:
                await producer.commit_offsets((IN, 0, 11), **stale)
            assert refused.value.kafka_error_code == ErrorCode.ILLEGAL_GENERATION
            with pytest.raises(GroupFencedError) as refused:
                await producer.commit_offsets((IN, 0, 11), generation_id=member.generation_id,
                                              member_id="gone")  # fmt: skip
            assert refused.value.kafka_error_code == ErrorCode.UNKNOWN_MEMBER_ID
            with pytest.raises(FencedInstanceIdError):
                await producer.commit_offsets((IN, 0, 11), **{**current, "member_id": "other"})
            # Without member details (TxnOffsetCommit v0-2) nothing is checked, as in Kafka.
            await producer.commit_offsets((IN, 1, 3))
            await producer.end(commit=True)
            assert fetched(broker.groups) == {(IN, 0): 10, (IN, 1): 3}

    run(scenario())


# -- refusals -------------------------------------------------------------------------------


def test_calls_out_of_sequence_are_refused_with_typed_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            coordinator = broker.transactions
            producer = Producer(broker)
            with pytest.raises(InvalidProducerIdMappingError):  # never initialised
                await coordinator.add_partitions(TXN, 1, 0, [(OUT, 0)])
            await producer.init()
            pid, epoch = producer.producer_id, producer.epoch
            with pytest.raises(InvalidTxnStateError, match="state Empty"):
                await coordinator.end_txn(TXN, pid, epoch, True)
            with pytest.raises(ProducerFencedError):
                await coordinator.add_partitions(TXN, pid, epoch + 1, [(OUT, 0)])
            with pytest.raises(InvalidProducerIdMappingError):
                await coordinator.add_partitions(TXN, pid + 1, epoch, [(OUT, 0)])
            with pytest.raises(TransactionPartitionsError) as refused:
                await coordinator.add_partitions(
                    TXN, pid, epoch, [(OUT, 0), (OUT, 2), ("nowhere", 0), (OFFSETS, 0)]
                )
            assert refused.value.errors == {
                (OUT, 2): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                ("nowhere", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                (OFFSETS, 0): ErrorCode.INVALID_TOPIC_EXCEPTION,
            }
            assert state(broker).state is TransactionState.EMPTY  # nothing was added
            with pytest.raises(InvalidTxnStateError, match="AddOffsetsToTxn"):
                await coordinator.txn_offset_commit(TXN, GROUP, pid, epoch, [(IN, 0, 1, -1, None)])
            with pytest.raises(InvalidGroupIdError):
                await coordinator.add_offsets(TXN, pid, epoch, "g" * 40_000)
            await coordinator.add_offsets(TXN, pid, epoch, GROUP)
            results = await coordinator.txn_offset_commit(
                TXN, GROUP, pid, epoch, [(IN, 0, 1, -1, None), ("", 0, 1, -1, None),
                                         (IN, 1, 1, -1, "m" * 5_000)],
            )  # fmt: skip
            assert [r.error_code for r in results] == [
                ErrorCode.NONE, ErrorCode.INVALID_TOPIC_EXCEPTION,
                ErrorCode.OFFSET_METADATA_TOO_LARGE,
            ]  # fmt: skip
            assert state(broker).offsets == {GROUP: {(IN, 0): PendingOffset(1, -1, "")}}
            for timeout_ms in (0, -5, 900_001):
                with pytest.raises(InvalidTransactionTimeoutError):
                    await coordinator.init_producer_id("other", timeout_ms)
            with pytest.raises(InvalidTxnRequestError):
                await coordinator.init_producer_id("", TIMEOUT_MS)
            with pytest.raises(InvalidTxnRequestError):
                await coordinator.init_producer_id(TXN, TIMEOUT_MS, pid, -1)

    run(scenario())


OFFSETS = "__consumer_offsets"


def test_the_coordinator_answers_only_between_start_and_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        broker = Broker(Log.open(tmp_path))
        with pytest.raises(CoordinatorLoadInProgressError):
            await broker.transactions.init_producer_id(TXN, TIMEOUT_MS)
        await broker.start()
        producer = Producer(broker)
        await producer.init()
        await broker.close()
        with pytest.raises(CoordinatorNotAvailableError) as refused:
            await producer.end(commit=True)
        assert refused.value.kafka_error_code == ErrorCode.NOT_COORDINATOR

    run(scenario())


def test_the_state_topic_is_internal() -> None:
    assert TRANSACTION_STATE_TOPIC in INTERNAL_TOPICS


# -- durable state --------------------------------------------------------------------------


def test_an_open_transaction_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with started(tmp_path, clock=clock) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init(timeout_ms=5_000)
            first = await producer.send(OUT, 0, "a")
            await producer.commit_offsets((IN, 0, 42))
        clock.advance(3_000)
        async with started(tmp_path, clock=clock) as broker:
            producer.broker = broker
            txn = state(broker)
            assert txn.state is TransactionState.ONGOING
            assert (txn.producer_id, txn.producer_epoch) == (producer.producer_id, producer.epoch)
            assert txn.offsets == {GROUP: {(IN, 0): PendingOffset(42, -1, "")}}
            assert broker.log.partition(OUT, 0).last_stable_offset == first
            assert await broker.transactions.abort_timed_out() == 0
            await producer.send(OUT, 0, "b")
            await producer.end(commit=True)
            assert fetched(broker.groups) == {(IN, 0): 42}
            assert markers(broker.log.partition(OUT, 0)) == [(2, "commit")]
        async with started(tmp_path, clock=clock) as broker:
            assert state(broker).state is TransactionState.COMPLETE_COMMIT
            assert fetched(broker.groups) == {(IN, 0): 42}

    run(scenario())


def test_an_open_transaction_keeps_its_timeout_across_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with started(tmp_path, clock=clock) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init(timeout_ms=5_000)
            await producer.send(OUT, 0, "a")
        clock.advance(5_001)
        async with started(tmp_path, clock=clock) as broker:
            assert await broker.transactions.abort_timed_out() == 1
            assert state(broker).state is TransactionState.COMPLETE_ABORT
            assert markers(broker.log.partition(OUT, 0)) == [(1, "abort")]

    run(scenario())


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "abort"])
def test_a_decided_transaction_is_completed_on_start(tmp_path: Path, commit: bool) -> None:
    """A crash after the decision was written, before any marker: the restart finishes."""

    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            first = await producer.send(OUT, 0, "a", "b")
            await producer.send(OUT, 1, "c")
            await producer.commit_offsets((IN, 0, 42))
            decided = state(broker).prepared(commit, broker.log.clock.time_ms())
            await broker.transactions.store.write(decided)  # then the "crash"
        async with started(tmp_path) as broker:
            done = TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
            assert state(broker).state is done
            out0 = broker.log.partition(OUT, 0)
            kind = "commit" if commit else "abort"
            assert markers(out0) == [(2, kind)]
            assert markers(broker.log.partition(OUT, 1)) == [(1, kind)]
            assert out0.last_stable_offset == 3
            aborted = [] if commit else [(producer.producer_id, first)]
            assert out0.aborted_transactions(0, 3) == aborted
            assert fetched(broker.groups) == ({(IN, 0): 42} if commit else {})
            # The producer carries on with its retried EndTxn, then a new transaction.
            producer.broker = broker
            await producer.end(commit)
            producer.sequences[(OUT, 0)] = 2
            await producer.send(OUT, 0, "d")
            await producer.end(commit=True)

    run(scenario())


def test_a_crash_keeps_exactly_what_was_acknowledged(tmp_path: Path) -> None:
    """Power cut (only fsynced bytes survive): the committed transaction stays committed,
    the open one stays open with its offsets, and its new producer aborts it."""
    fs = MemoryFilesystem()

    async def scenario() -> None:
        async with started("/data", fs=fs) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            await producer.send(OUT, 0, "committed")
            await producer.commit_offsets((IN, 0, 1))
            await producer.end(commit=True)
            open_first = await producer.send(OUT, 0, "open")
            await producer.commit_offsets((IN, 0, 2))
            survivor = fs.crash()
        async with started("/data", fs=survivor) as broker:
            assert state(broker).state is TransactionState.ONGOING
            assert fetched(broker.groups) == {(IN, 0): 1}
            out0 = broker.log.partition(OUT, 0)
            assert out0.last_stable_offset == open_first
            successor = Producer(broker)
            await successor.init()
            assert out0.aborted_transactions(0, out0.high_watermark) == [
                (producer.producer_id, open_first)
            ]
            assert markers(out0) == [(1, "commit"), (3, "abort")]
            assert fetched(broker.groups) == {(IN, 0): 1}

    run(scenario())


def test_a_crash_right_after_end_txn_completes_it_again(tmp_path: Path) -> None:
    """CompleteCommit is not waited for: a power cut just after EndTxn leaves the decision,
    which the restart completes again; the second marker and the offsets change nothing."""
    fs = MemoryFilesystem()

    async def scenario() -> None:
        async with started("/data", fs=fs) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            await producer.send(OUT, 0, "a", "b")
            await producer.commit_offsets((IN, 0, 9))
            await producer.end(commit=True)
            survivor = fs.crash()
        async with started("/data", fs=survivor) as broker:
            assert state(broker).state is TransactionState.COMPLETE_COMMIT
            out0 = broker.log.partition(OUT, 0)
            assert markers(out0) == [(2, "commit"), (3, "commit")]
            assert out0.last_stable_offset == out0.high_watermark == 4
            assert out0.aborted_transactions(0, 4) == []
            assert fetched(broker.groups) == {(IN, 0): 9}

    run(scenario())


def test_markers_that_cannot_be_written_are_finished_later(tmp_path: Path) -> None:
    """A partition offline under EndTxn: the decision stays, the id answers
    CONCURRENT_TRANSACTIONS until its markers are written, here by the next start."""

    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            await producer.send(OUT, 0, "a")
            await producer.send(OUT, 1, "b")
            await producer.commit_offsets((IN, 0, 5))
            broker.log.partition(OUT, 1).go_offline("a test", OSError(5, "I/O error"))
            await producer.end(commit=True)  # decided: answered, finished later
            assert state(broker).state is TransactionState.PREPARE_COMMIT
            assert broker.transactions.statistics().completing == 1
            with pytest.raises(ConcurrentTransactionsError):
                await producer.send(OUT, 0, "c")
            with pytest.raises(ConcurrentTransactionsError):
                await producer.end(commit=True)
            with pytest.raises(InvalidTxnStateError):
                await producer.end(commit=False)
            with pytest.raises(ConcurrentTransactionsError):
                await producer.init()
            assert await broker.transactions.abort_timed_out() == 0  # retried, still failing
            assert fetched(broker.groups) == {}
        async with started(tmp_path) as broker:
            assert state(broker).state is TransactionState.COMPLETE_COMMIT
            assert markers(broker.log.partition(OUT, 1))[-1][1] == "commit"
            assert fetched(broker.groups) == {(IN, 0): 5}

    run(scenario())


def test_a_cancelled_caller_does_not_stop_its_end(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as broker:
            create_topics(broker)
            producer = Producer(broker)
            await producer.init()
            await producer.send(OUT, 0, "a")
            ending = asyncio.ensure_future(producer.end(commit=True))
            await asyncio.sleep(0)
            ending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await ending
            while state(broker).state is not TransactionState.COMPLETE_COMMIT:
                await asyncio.sleep(0.01)
            assert markers(broker.log.partition(OUT, 0)) == [(1, "commit")]

    run(scenario())


# -- the record format ----------------------------------------------------------------------


def test_state_records_round_trip_and_damage_is_skipped(tmp_path: Path) -> None:
    txn = Transaction(
        "tx-ü", 7, 3, 60_000, TransactionState.ONGOING, 1_700_000_000_123, start_ms=1_700,
        last_producer_id=6, last_producer_epoch=32766,
        partitions=frozenset({("a", 0), ("b", 9)}),
        offsets={"g": {("in", 1): PendingOffset(5, 2, "meta")}, "h": {}},
    )  # fmt: skip
    assert decode(encode_key(txn.transactional_id), encode_value(txn)) == txn
    value = encode_value(txn)
    for damaged in (value[:-1], value + b"x", b"\x00\x00" + value[2:]):
        with pytest.raises(ValueError):
            decode(encode_key(txn.transactional_id), damaged)

    async def scenario() -> None:
        async with started(tmp_path) as broker:
            await Producer(broker).init()
            state_partition = broker.log.partition(TRANSACTION_STATE_TOPIC, 0)
            state_partition.append(build_batch([Record(encode_key("bad"), b"\x00\x64junk")]))
        async with started(tmp_path) as broker:
            assert broker.transactions.store.skipped_records == 1
            assert broker.transactions.transaction("bad") is None
            assert state(broker).state is TransactionState.EMPTY
            topic = broker.log.topic(TRANSACTION_STATE_TOPIC)
            assert topic.config.compact

    run(scenario())
