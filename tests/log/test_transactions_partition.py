"""Transactions in one partition: open transactions and the last stable offset, markers,
the aborted-transaction index, fencing, restarts and crashes, truncation, retention and
compaction; and a model-based test of what a read_committed reader sees."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka.record.control_record import ABORT_MARKER, COMMIT_MARKER, ControlRecord
from aiokafka.record.default_records import DefaultRecordBatch
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.log import (
    InvalidRecordError,
    Log,
    ManualClock,
    MemoryFilesystem,
    OutOfOrderSequenceError,
    PartitionLog,
    ProducerFencedError,
    compact,
)
from streamer.log.batch import build_control_batch
from streamer.log.partition import PRODUCER_ID_EXPIRATION_MS
from streamer.log.producer_state import AbortedTransaction, ProducerStateTable

from .batches import ROOT, PartitionFactory, Record, build_batch, read_batches

P1, P2, P3 = 1001, 1002, 1003
COMPACT = {"cleanup.policy": "compact"}


@dataclass
class Producer:
    """A transactional producer's id, epoch and next sequence number in one partition."""

    producer_id: int
    epoch: int = 0
    sequence: int = 0
    sent: int = 0

    def send(self, partition: PartitionLog, count: int = 1, *, key: bytes | None = None) -> int:
        """Append a transactional batch of ``count`` records; return its base offset."""
        items = [
            Record(key or f"{self.producer_id}-{self.sent + i}".encode(),
                   f"{self.producer_id}:{self.sent + i}".encode())
            for i in range(count)
        ]  # fmt: skip
        batch = build_batch(
            items, producer_id=self.producer_id, producer_epoch=self.epoch,
            base_sequence=self.sequence, transactional=True,
        )  # fmt: skip
        self.sequence += count
        self.sent += count
        return partition.append(batch).base_offset

    def end(self, partition: PartitionLog, *, commit: bool) -> int:
        return partition.write_marker(self.producer_id, self.epoch, commit=commit)


def plain(partition: PartitionLog, value: bytes) -> int:
    """Append a non-transactional record; return its offset."""
    return partition.append(build_batch([Record(value, value)])).base_offset


def read_committed(partition: PartitionLog) -> list[bytes | None]:
    """The values a read_committed Kafka client sees reading the whole partition: batches
    below the last stable offset, skipping transactional batches of producers named in the
    aborted list from their first offset on until their ABORT marker (as aiokafka and the
    Java client do)."""
    stable = partition.last_stable_offset
    pending = partition.aborted_transactions(partition.log_start_offset, stable)
    aborting: set[int] = set()
    values: list[bytes | None] = []
    for raw in read_batches(partition):
        batch = DefaultRecordBatch(raw)
        if batch.base_offset >= stable:
            break
        while pending and pending[0][1] <= batch.base_offset:
            aborting.add(pending.pop(0)[0])
        if batch.is_control_batch:
            key = next(iter(batch)).key
            assert key is not None
            if ControlRecord.parse(key) == ABORT_MARKER:
                aborting.discard(batch.producer_id)
            continue
        if batch.is_transactional and batch.producer_id in aborting:
            continue
        values.extend(record.value for record in batch)
    return values


def reopened(log: Log, fs: MemoryFilesystem, clock: ManualClock, *, crash: bool) -> Log:
    """The log after a clean close, or after a power cut (no close)."""
    if crash:
        return Log.open(ROOT, fs=fs.crash(), clock=clock)
    log.close()
    return Log.open(ROOT, fs=fs, clock=clock)


def state(partition: PartitionLog) -> tuple[int, dict[int, int], list[tuple[int, int]]]:
    end = partition.log_end_offset
    return (
        partition.last_stable_offset,
        partition.open_transactions(),
        partition.aborted_transactions(0, end + 1),
    )


# -- open transactions, markers and the last stable offset ---------------------------------


def test_interleaved_transactions_move_the_last_stable_offset(partition: PartitionLog) -> None:
    one, two, three = Producer(P1), Producer(P2), Producer(P3)
    assert partition.last_stable_offset == 0
    assert one.send(partition, 2) == 0  # 0-1
    assert plain(partition, b"x") == 2
    assert two.send(partition) == 3
    assert one.send(partition) == 4  # joins P1's open transaction
    assert three.send(partition, 3) == 5  # 5-7
    assert partition.open_transactions() == {P1: 0, P2: 3, P3: 5}
    assert partition.last_stable_offset == 0
    assert partition.high_watermark == 8

    assert two.end(partition, commit=True) == 8  # the oldest (P1) is still open
    assert partition.last_stable_offset == 0
    assert one.end(partition, commit=False) == 9
    assert partition.last_stable_offset == 5
    assert partition.open_transactions() == {P3: 5}
    assert three.end(partition, commit=True) == 10
    assert partition.last_stable_offset == partition.high_watermark == 11
    assert partition.open_transactions() == {}
    assert partition.aborted_transactions(0, 11) == [(P1, 0)]
    assert partition.aborted_ranges(0, 11) == [AbortedTransaction(P1, 0, 9)]
    assert read_committed(partition) == [
        b"x", b"1002:0", b"1003:0", b"1003:1", b"1003:2"
    ]  # fmt: skip

    assert one.send(partition) == 11  # a new transaction of P1
    assert partition.open_transactions() == {P1: 11}
    assert partition.last_stable_offset == 11
    plain(partition, b"y")
    assert partition.last_stable_offset == 11  # data after an open transaction waits
    assert read_committed(partition)[-1] == b"1003:2"


def test_markers_are_kafka_control_batches(partition: PartitionLog) -> None:
    producer = Producer(P1, epoch=3)
    producer.send(partition)
    partition.write_marker(P1, 3, commit=True, coordinator_epoch=7)
    producer.send(partition)
    partition.write_marker(P1, 3, commit=False, coordinator_epoch=8)
    markers = [DefaultRecordBatch(raw) for raw in read_batches(partition)][1::2]
    for batch, expected, epoch in zip(markers, (COMMIT_MARKER, ABORT_MARKER), (7, 8),
                                      strict=True):  # fmt: skip
        assert batch.is_control_batch and batch.is_transactional
        assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (P1, 3, -1)
        assert batch.validate_crc()
        (record,) = list(batch)
        assert record.key is not None and ControlRecord.parse(record.key) == expected
        assert record.value == b"\x00\x00" + epoch.to_bytes(4, "big")


def test_clients_still_may_not_write_control_batches(partition: PartitionLog) -> None:
    marker = build_control_batch(P1, 0, commit=True, coordinator_epoch=0, timestamp_ms=0)
    with pytest.raises(InvalidRecordError, match="control batches"):
        partition.append(marker)
    assert partition.log_end_offset == 0


def test_a_marker_without_an_open_transaction_is_written_and_changes_nothing(
    partition: PartitionLog,
) -> None:
    producer = Producer(P2)
    assert partition.write_marker(P1, 0, commit=False) == 0  # never wrote here
    producer.send(partition)
    assert partition.write_marker(P1, 0, commit=True) == 2  # P2's transaction is not P1's
    assert partition.write_marker(P1, 0, commit=False) == 3  # a retry after a crash
    assert partition.open_transactions() == {P2: 1}
    assert partition.aborted_transactions(0, 10) == []
    assert partition.last_stable_offset == 1
    producer.end(partition, commit=True)
    assert producer.end(partition, commit=False) == 5  # the coordinator retried: no effect
    assert partition.aborted_transactions(0, 10) == []
    assert read_committed(partition) == [b"1002:0"]


def test_a_marker_from_an_older_epoch_is_fenced(partition: PartitionLog) -> None:
    producer = Producer(P1, epoch=2)
    producer.send(partition)
    with pytest.raises(ProducerFencedError, match="epoch 1") as raised:
        partition.write_marker(P1, 1, commit=True)
    assert raised.value.kafka_error_code == 47
    assert partition.log_end_offset == 1
    assert partition.open_transactions() == {P1: 0}


def test_a_marker_with_a_newer_epoch_bumps_it_and_fences_the_old_producer(
    partition: PartitionLog,
) -> None:
    old = Producer(P1, epoch=0)
    old.send(partition, 2)
    # The coordinator aborts the old instance's transaction with the bumped epoch.
    assert partition.write_marker(P1, 1, commit=False) == 2
    assert partition.aborted_transactions(0, 3) == [(P1, 0)]
    with pytest.raises(ProducerFencedError):
        old.send(partition)
    with pytest.raises(OutOfOrderSequenceError):  # the new epoch starts at sequence 0
        Producer(P1, epoch=1, sequence=5).send(partition)
    assert Producer(P1, epoch=1).send(partition) == 3
    assert partition.open_transactions() == {P1: 3}


def test_bad_marker_arguments_are_refused(partition: PartitionLog) -> None:
    with pytest.raises(InvalidRecordError, match="producer id"):
        partition.write_marker(-1, 0, commit=True)
    with pytest.raises(InvalidRecordError):
        partition.write_marker(P1, -1, commit=True)
    assert partition.log_end_offset == 0


def test_aborted_transactions_overlapping_a_range(partition: PartitionLog) -> None:
    one, two = Producer(P1), Producer(P2)
    one.send(partition)  # 0
    two.send(partition)  # 1
    one.end(partition, commit=False)  # 2: P1 aborted [0, 2]
    plain(partition, b"x")  # 3
    two.send(partition)  # 4
    two.end(partition, commit=False)  # 5: P2 aborted [1, 5]
    one.send(partition)  # 6
    one.end(partition, commit=False)  # 7: P1 aborted [6, 7]
    assert partition.aborted_transactions(0, 8) == [(P1, 0), (P2, 1), (P1, 6)]
    assert partition.aborted_transactions(0, 1) == [(P1, 0)]
    assert partition.aborted_transactions(3, 4) == [(P2, 1)]
    assert partition.aborted_transactions(3, 7) == [(P2, 1), (P1, 6)]
    assert partition.aborted_transactions(6, 8) == [(P1, 6)]
    assert partition.aborted_transactions(8, 20) == []
    assert partition.aborted_transactions(4, 4) == []
    assert read_committed(partition) == [b"x"]


def test_producers_with_open_transactions_do_not_expire(
    partition: PartitionLog, clock: ManualClock
) -> None:
    Producer(P1).send(partition)
    Producer(P2).send(partition)
    partition.write_marker(P2, 0, commit=True)
    clock.advance(PRODUCER_ID_EXPIRATION_MS + 1)
    partition.run_maintenance()
    assert set(partition.producer_state.producers) == {P1}
    assert partition.open_transactions() == {P1: 0}


def test_snapshots_before_transactions_still_load() -> None:
    table = ProducerStateTable.from_bytes(b"[[7, 1, 100, [[0, 2, 10, 12]]]]")
    assert table.producers[7].last_sequence == 2
    assert (table.ongoing, table.aborted) == ({}, [])
    with pytest.raises(ValueError):
        ProducerStateTable.from_bytes(b'{"aborted": [[1, 5, 9], [2, 0, 3]]}')


# -- restarts and crashes ------------------------------------------------------------------


def _transactions_across_segments(partition: PartitionLog) -> None:
    """P1 open since offset 0 across rolls, P2 aborted, P3 committed, P2 open again."""
    one, two, three = Producer(P1), Producer(P2), Producer(P3)
    one.send(partition, 3)
    two.send(partition, 2)
    plain(partition, b"a")
    partition.roll()  # a snapshot with P1 and P2 open
    three.send(partition)
    two.end(partition, commit=False)
    three.end(partition, commit=True)
    partition.roll()  # a snapshot with P2's abort in the index
    one.send(partition)
    two.send(partition)  # batches after the last snapshot: replayed on open
    plain(partition, b"b")


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_open_transactions_and_the_index_survive_a_restart(
    fs: MemoryFilesystem, clock: ManualClock, crash: bool
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1)
    partition = log.partition("t", 0)
    _transactions_across_segments(partition)
    before = state(partition)
    assert before == (0, {P1: 0, P2: 10}, [(P2, 3)])
    log = reopened(log, fs, clock, crash=crash)
    partition = log.partition("t", 0)
    assert state(partition) == before
    # The transactions go on after the restart.
    partition.write_marker(P1, 0, commit=True)
    assert partition.last_stable_offset == 10
    partition.write_marker(P2, 0, commit=False)
    assert state(partition) == (14, {}, [(P2, 3), (P2, 10)])
    assert read_committed(partition) == [
        b"1001:0", b"1001:1", b"1001:2", b"a", b"1003:0", b"1001:3", b"b"
    ]  # fmt: skip
    log.close()


def test_state_survives_a_crash_before_any_snapshot(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1)
    partition = log.partition("t", 0)
    one, two = Producer(P1), Producer(P2)
    one.send(partition)
    two.send(partition)
    one.end(partition, commit=False)
    before = state(partition)
    assert before == (1, {P2: 1}, [(P1, 0)])
    assert not [name for name in fs.listdir(partition.directory) if name.endswith(".snapshot")]
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        assert state(survivor.partition("t", 0)) == before


def test_state_survives_a_kill_on_disk(tmp_path: Path, clock: ManualClock) -> None:
    log = Log.open(tmp_path, clock=clock)
    log.create_topic("t", 1, {"segment.bytes": 400})
    partition = log.partition("t", 0)
    _transactions_across_segments(partition)
    before = state(partition)
    del log, partition  # the process stops: no close, no snapshot at close
    with Log.open(tmp_path, clock=clock) as survivor:
        assert state(survivor.partition("t", 0)) == before


def test_a_marker_lost_in_a_crash_leaves_the_transaction_open(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1)
    partition = log.partition("t", 0)
    Producer(P1).send(partition, 2)
    assert partition.write_marker(P1, 0, commit=False, wait_durable=False) == 2
    assert partition.last_stable_offset == 3
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        recovered = survivor.partition("t", 0)
        assert recovered.log_end_offset == 2  # the unsynced marker is gone
        assert state(recovered) == (0, {P1: 0}, [])
        recovered.write_marker(P1, 0, commit=False)  # the coordinator writes it again
        assert state(recovered) == (3, {}, [(P1, 0)])


def scanned_state(partition: PartitionLog) -> tuple[int, dict[int, int], list[tuple[int, int]]]:
    """:func:`state` computed from scratch, by reading every batch from offset 0."""
    ongoing: dict[int, int] = {}
    aborted: list[tuple[int, int]] = []
    for raw in read_batches(partition):
        batch = DefaultRecordBatch(raw)
        if not batch.is_transactional:
            continue
        if not batch.is_control_batch:
            ongoing.setdefault(batch.producer_id, batch.base_offset)
            continue
        key = next(iter(batch)).key
        assert key is not None
        first = ongoing.pop(batch.producer_id, None)
        if first is not None and ControlRecord.parse(key) == ABORT_MARKER:
            aborted.append((batch.producer_id, first))
    stable = min(ongoing.values(), default=partition.high_watermark)
    return stable, ongoing, sorted(aborted, key=lambda entry: entry[1])


@pytest.mark.parametrize("seed", range(40))
def test_a_crash_with_torn_tails_keeps_the_state_of_the_surviving_batches(seed: int) -> None:
    rng = random.Random(seed)
    fs, clock = MemoryFilesystem(), ManualClock()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1, {"segment.bytes": 700})
    partition = log.partition("t", 0)
    producers = {pid: Producer(pid) for pid in (P1, P2, P3)}
    for _ in range(rng.randrange(5, 40)):
        producer = producers[rng.choice((P1, P2, P3))]
        durable = rng.random() < 0.3
        roll = rng.random()
        if roll < 0.5:
            count = rng.randrange(1, 4)
            batch = build_batch(
                [Record(b"k", b"v")] * count, producer_id=producer.producer_id,
                producer_epoch=0, base_sequence=producer.sequence, transactional=True,
            )  # fmt: skip
            producer.sequence += count
            partition.append(batch, wait_durable=durable)
        elif roll < 0.8:
            partition.write_marker(producer.producer_id, 0, commit=rng.random() < 0.5,
                                   wait_durable=durable)  # fmt: skip
        else:
            partition.append(build_batch(1), wait_durable=durable)
    with Log.open(ROOT, fs=fs.crash(rng), clock=clock) as survivor:
        recovered = survivor.partition("t", 0)
        assert state(recovered) == scanned_state(recovered)


# -- truncation, retention, deletion -------------------------------------------------------


def test_truncation_reopens_or_forgets_transactions(partition: PartitionLog) -> None:
    _transactions_across_segments(partition)  # P2's abort marker at 7, its second txn at 10
    partition.truncate_to(10)  # P2's second transaction is gone
    assert state(partition) == (0, {P1: 0}, [(P2, 3)])
    partition.truncate_to(7)  # before P2's abort and P3's commit: both are open again
    assert state(partition) == (0, {P1: 0, P2: 3, P3: 6}, [])
    partition.truncate_to(3)  # before P2's first batch
    assert state(partition) == (0, {P1: 0}, [])
    partition.truncate_to(0)
    assert state(partition) == (0, {}, [])


def test_truncation_keeps_a_transaction_that_began_before_the_log_start(
    partition: PartitionLog,
) -> None:
    one = Producer(P1)
    one.send(partition)  # 0
    plain(partition, b"a")  # 1
    partition.roll()  # snapshot at 2: P1 open since 0
    plain(partition, b"b")  # 2
    partition.roll()  # snapshot at 3
    partition.delete_records(3)  # P1's first batch is deleted with its segment
    assert [segment.base_offset for segment in partition.segments] == [3]
    one.end(partition, commit=False)  # 3
    plain(partition, b"c")  # 4
    partition.truncate_to(4)
    assert state(partition) == (4, {}, [(P1, 0)])
    # The abort marker is gone: P1 is open again (from the snapshot, since replaying from
    # the log start alone never sees its first batch); the stable offset is the log start.
    partition.truncate_to(3)
    assert state(partition) == (3, {P1: 0}, [])


def test_retention_forgets_old_aborts_and_clamps_the_stable_offset(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.bytes": 1})
    one, two = Producer(P1), Producer(P2)
    one.send(partition)  # 0
    one.end(partition, commit=False)  # 1
    two.send(partition)  # 2: stays open
    partition.roll()
    plain(partition, b"a")  # 3
    partition.roll()
    plain(partition, b"b")  # 4
    assert state(partition) == (2, {P2: 2}, [(P1, 0)])
    assert partition.apply_retention() == 2
    assert partition.log_start_offset == 4
    # The aborted range lies wholly before the log start; P2's first batch was deleted,
    # its transaction is still open, and the stable offset is never below the log start.
    assert partition.producer_state.aborted == []
    assert state(partition) == (4, {P2: 2}, [])
    two.end(partition, commit=True)
    assert partition.last_stable_offset == partition.high_watermark == 6


def test_delete_records_forgets_aborts_before_the_new_start(partition: PartitionLog) -> None:
    one = Producer(P1)
    one.send(partition)  # 0
    one.end(partition, commit=False)  # 1
    one.send(partition)  # 2
    one.end(partition, commit=False)  # 3
    partition.delete_records(2)
    assert partition.aborted_transactions(0, 4) == [(P1, 2)]


# -- compaction ----------------------------------------------------------------------------


def test_compaction_keeps_what_read_committed_sees(make_partition: PartitionFactory) -> None:
    partition = make_partition(COMPACT)
    committed, aborted, still_open = Producer(P1), Producer(P2), Producer(P3)
    plain(partition, b"k1")  # key k1, value k1
    committed.send(partition, key=b"k2")
    aborted.send(partition, key=b"k1")  # would supersede k1 if it counted
    aborted.send(partition, key=b"k3")
    committed.end(partition, commit=True)
    aborted.end(partition, commit=False)
    partition.roll()
    still_open.send(partition, key=b"k2")  # open: must not supersede P1's k2
    partition.roll()
    plain(partition, b"k4")
    before = read_committed(partition)
    assert before == [b"k1", b"1001:0"]
    batches_before = len(read_batches(partition))
    result = compact(partition)
    assert result.records_removed == 2  # the aborted records, and nothing else
    assert result.segments_before == 1  # the segment holding P3's open batch is not cleaned
    assert read_committed(partition) == before
    # P2's first batch went; its last one stays, empty, to keep its sequence number.
    assert len(read_batches(partition)) == batches_before - 1
    assert partition.aborted_transactions(0, 100) == [(P2, 2)]
    assert partition.open_transactions() == {P3: 6}
    # Once P3 aborts, its record goes in the next compaction; k2 stays P1's.
    still_open.end(partition, commit=False)
    partition.roll()
    compact(partition)
    assert read_committed(partition) == [b"k1", b"1001:0", b"k4"]


def test_compaction_keeps_an_aborted_producers_last_batch_empty(
    make_partition: PartitionFactory,
) -> None:
    partition = make_partition(COMPACT)
    producer = Producer(P1)
    producer.send(partition, 2)
    producer.end(partition, commit=False)
    partition.roll()
    compact(partition)
    kinds = [DefaultRecordBatch(raw) for raw in read_batches(partition)]
    assert [(b.base_offset, len(list(b)), b.is_control_batch) for b in kinds] == [
        (0, 0, False), (2, 1, True)
    ]  # fmt: skip
    assert producer.send(partition) == 3  # the sequence survived
    assert read_committed(partition) == []


# -- the model -----------------------------------------------------------------------------


@dataclass
class Model:
    """What a read_committed reader must see: records in log order, each owned by nothing
    (non-transactional) or by a transaction whose fate is open, committed or aborted."""

    records: list[tuple[bytes, int | None]] = field(default_factory=list)  # value, txn
    fate: dict[int, str] = field(default_factory=dict)  # txn number → fate
    first_offset: dict[int, int] = field(default_factory=dict)  # txn number → offset
    open_txn: dict[int, int] = field(default_factory=dict)  # producer id → txn number
    owner: dict[int, int] = field(default_factory=dict)  # txn number → producer id

    def visible(self) -> list[bytes]:
        open_positions = [
            position for position, (_, txn) in enumerate(self.records)
            if txn is not None and self.fate[txn] == "open"
        ]  # fmt: skip
        stop = open_positions[0] if open_positions else len(self.records)
        return [
            value for value, txn in self.records[:stop]
            if txn is None or self.fate[txn] == "committed"
        ]  # fmt: skip

    def aborted(self) -> list[tuple[int, int]]:
        return sorted(
            ((self.owner[txn], self.first_offset[txn])
             for txn, fate in self.fate.items() if fate == "aborted"),
            key=lambda entry: entry[1],
        )  # fmt: skip


operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([P1, P2, P3]), st.integers(1, 3)),
        st.tuples(st.just("plain"), st.just(0), st.integers(1, 3)),
        st.tuples(st.sampled_from(["commit", "abort"]), st.sampled_from([P1, P2, P3]),
                  st.just(0)),
        st.tuples(st.sampled_from(["restart", "crash", "roll", "compact"]), st.just(0),
                  st.just(0)),
    ),
    min_size=4,
    max_size=40,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(operations)
def test_read_committed_matches_a_model(ops: list[tuple[str, int, int]]) -> None:
    fs, clock = MemoryFilesystem(), ManualClock()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1, {**COMPACT, "segment.bytes": 600})
    producers = {pid: Producer(pid) for pid in (P1, P2, P3)}
    model = Model()
    values = (f"v{i}".encode() for i in range(10_000))
    try:
        for kind, pid, count in ops:
            partition = log.partition("t", 0)
            if kind == "send":
                _send(partition, model, producers[pid], count, values)
            elif kind == "plain":
                for _ in range(count):
                    value = next(values)
                    plain(partition, value)
                    model.records.append((value, None))
            elif kind in ("commit", "abort"):
                partition.write_marker(pid, 0, commit=kind == "commit")
                txn = model.open_txn.pop(pid, None)
                if txn is not None:
                    model.fate[txn] = "committed" if kind == "commit" else "aborted"
            elif kind in ("restart", "crash"):
                log = reopened(log, fs, clock, crash=kind == "crash")
                if kind == "crash":
                    fs = _current_fs(log)
            elif kind == "roll":
                partition.roll()
            else:
                compact(partition)
            _check(log.partition("t", 0), model)
    finally:
        log.close()


def _send(
    partition: PartitionLog, model: Model, producer: Producer, count: int,
    values: Iterator[bytes],
) -> None:  # fmt: skip
    batch_values = [next(values) for _ in range(count)]
    batch = build_batch(
        [Record(value, value) for value in batch_values],
        producer_id=producer.producer_id, producer_epoch=0,
        base_sequence=producer.sequence, transactional=True,
    )  # fmt: skip
    offset = partition.append(batch).base_offset
    producer.sequence += count
    txn = model.open_txn.get(producer.producer_id)
    if txn is None:
        txn = len(model.fate)
        model.open_txn[producer.producer_id] = txn
        model.fate[txn] = "open"
        model.first_offset[txn] = offset
        model.owner[txn] = producer.producer_id
    model.records.extend((value, txn) for value in batch_values)


def _current_fs(log: Log) -> MemoryFilesystem:
    assert isinstance(log.fs, MemoryFilesystem)
    return log.fs


def _check(partition: PartitionLog, model: Model) -> None:
    open_first = {model.owner[txn]: model.first_offset[txn] for txn in model.open_txn.values()}
    assert partition.open_transactions() == open_first
    expected_stable = min(open_first.values(), default=partition.high_watermark)
    assert partition.last_stable_offset == expected_stable
    assert partition.aborted_transactions(0, partition.log_end_offset) == model.aborted()
    assert read_committed(partition) == model.visible()
