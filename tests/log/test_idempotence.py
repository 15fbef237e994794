"""Idempotent producers: duplicates, sequence checks, fencing, and state across restarts."""

from __future__ import annotations

import pytest
from streamer.log import (
    Log,
    ManualClock,
    MemoryFilesystem,
    OutOfOrderSequenceError,
    PartitionLog,
    ProducerError,
    ProducerFencedError,
)
from streamer.log.batch import parse_header
from streamer.log.producer_state import ProducerStateTable

from .batches import (
    ROOT,
    PartitionFactory,
    build_batch,
    idempotent_batch,
    partition_files,
    read_all,
)


def test_sequences_append_in_order(partition: PartitionLog) -> None:
    assert partition.append(idempotent_batch(3, sequence=0)).base_offset == 0
    assert partition.append(idempotent_batch(2, sequence=3)).base_offset == 3
    assert partition.append(idempotent_batch(1, sequence=5)).base_offset == 5
    assert partition.log_end_offset == 6
    assert partition.statistics().producers == 1


def test_duplicate_returns_the_original_offsets_and_writes_nothing(
    partition: PartitionLog, fs: MemoryFilesystem
) -> None:
    partition.append(idempotent_batch(3, sequence=0))
    first = partition.append(idempotent_batch(2, sequence=3))
    before = partition_files(fs, partition)
    retry = partition.append(idempotent_batch(2, sequence=3))
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset)
    assert (retry.base_offset, retry.last_offset) == (3, 4)
    older = partition.append(idempotent_batch(3, sequence=0))
    assert older.duplicate
    assert (older.base_offset, older.last_offset) == (0, 2)
    assert partition.log_end_offset == 5
    assert partition_files(fs, partition) == before
    assert partition.append(idempotent_batch(1, sequence=5)).base_offset == 5


def test_duplicates_are_found_among_the_last_five_batches(partition: PartitionLog) -> None:
    for sequence in range(7):
        partition.append(idempotent_batch(1, sequence=sequence))
    for sequence in range(2, 7):
        result = partition.append(idempotent_batch(1, sequence=sequence))
        assert result.duplicate
        assert result.base_offset == sequence
    with pytest.raises(OutOfOrderSequenceError):
        partition.append(idempotent_batch(1, sequence=1))  # too old to be remembered
    assert partition.log_end_offset == 7


@pytest.mark.parametrize("sequence", [4, 10, 2, 1])
def test_sequence_gap_or_overlap_is_out_of_order(partition: PartitionLog, sequence: int) -> None:
    partition.append(idempotent_batch(3, sequence=0))
    with pytest.raises(OutOfOrderSequenceError, match="expected 3") as raised:
        partition.append(idempotent_batch(1, sequence=sequence))
    assert raised.value.kafka_error_code == 45
    assert partition.log_end_offset == 3


def test_a_new_producer_may_start_at_any_sequence(partition: PartitionLog) -> None:
    assert partition.append(idempotent_batch(2, sequence=57)).base_offset == 0
    assert partition.append(idempotent_batch(1, sequence=59)).base_offset == 2


def test_producers_are_independent(partition: PartitionLog) -> None:
    partition.append(idempotent_batch(2, producer_id=1, sequence=0))
    partition.append(idempotent_batch(2, producer_id=2, sequence=0))
    partition.append(idempotent_batch(1, producer_id=1, sequence=2))
    assert partition.append(idempotent_batch(2, producer_id=2, sequence=0)).duplicate
    assert partition.statistics().producers == 2
    assert partition.log_end_offset == 5


def test_older_epoch_is_fenced(partition: PartitionLog) -> None:
    partition.append(idempotent_batch(1, epoch=0, sequence=0))
    partition.append(idempotent_batch(1, epoch=1, sequence=0))
    with pytest.raises(ProducerFencedError, match="epoch 0 is older") as raised:
        partition.append(idempotent_batch(1, epoch=0, sequence=1))
    assert raised.value.kafka_error_code == 47
    with pytest.raises(ProducerFencedError):
        partition.append(idempotent_batch(1, epoch=0, sequence=0))  # not even a duplicate
    assert partition.log_end_offset == 2


def test_a_new_epoch_must_start_at_sequence_zero(partition: PartitionLog) -> None:
    partition.append(idempotent_batch(3, epoch=0, sequence=0))
    with pytest.raises(OutOfOrderSequenceError, match="epoch 1 at sequence 3, not 0"):
        partition.append(idempotent_batch(1, epoch=1, sequence=3))
    assert partition.log_end_offset == 3
    assert partition.append(idempotent_batch(1, epoch=1, sequence=0)).base_offset == 3
    # The new epoch's history replaced the old one.
    assert not partition.append(idempotent_batch(1, epoch=1, sequence=1)).duplicate


def test_sequence_wraps_around(partition: PartitionLog) -> None:
    last = (1 << 31) - 1
    partition.append(idempotent_batch(2, sequence=last - 1))
    assert partition.append(idempotent_batch(1, sequence=0)).base_offset == 2
    assert partition.append(idempotent_batch(1, sequence=0)).duplicate


def test_producer_errors_share_a_base(partition: PartitionLog) -> None:
    partition.append(idempotent_batch(1, sequence=0))
    with pytest.raises(ProducerError):
        partition.append(idempotent_batch(1, sequence=9))


def test_non_idempotent_batches_are_never_duplicates(partition: PartitionLog) -> None:
    batch = build_batch(2)
    assert partition.append(batch).base_offset == 0
    assert partition.append(batch).base_offset == 2
    assert not partition.append(batch).duplicate
    assert partition.statistics().producers == 0


def _history(partition: PartitionLog) -> None:
    partition.append(idempotent_batch(2, producer_id=1, sequence=0))
    partition.append(idempotent_batch(3, producer_id=2, epoch=4, sequence=10))
    partition.append(idempotent_batch(1, producer_id=1, sequence=2))


def _check_history_survived(partition: PartitionLog) -> None:
    assert partition.log_end_offset == 6
    retry = partition.append(idempotent_batch(1, producer_id=1, sequence=2))
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (5, 5)
    retry = partition.append(idempotent_batch(3, producer_id=2, epoch=4, sequence=10))
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (2, 4)
    with pytest.raises(OutOfOrderSequenceError):
        partition.append(idempotent_batch(1, producer_id=1, sequence=4))
    with pytest.raises(ProducerFencedError):
        partition.append(idempotent_batch(1, producer_id=2, epoch=3, sequence=13))
    assert partition.append(idempotent_batch(1, producer_id=1, sequence=3)).base_offset == 6
    assert partition.log_end_offset == 7


@pytest.mark.parametrize("segment_bytes", [1 << 30, 250], ids=["one-segment", "rolled"])
def test_producer_state_survives_close_and_reopen(
    fs: MemoryFilesystem, clock: ManualClock, segment_bytes: int
) -> None:
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        log.create_topic("p", 1, {"segment.bytes": segment_bytes})
        _history(log.partition("p", 0))
        assert len(log.partition("p", 0).segments) == (2 if segment_bytes == 250 else 1)
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        _check_history_survived(log.partition("p", 0))


@pytest.mark.parametrize("segment_bytes", [1 << 30, 250], ids=["one-segment", "rolled"])
def test_producer_state_survives_a_crash(
    fs: MemoryFilesystem, clock: ManualClock, segment_bytes: int
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("p", 1, {"segment.bytes": segment_bytes})
    _history(log.partition("p", 0))
    survivor = fs.crash()  # no close: the snapshot at close was never written
    with Log.open(ROOT, fs=survivor, clock=clock) as reopened:
        _check_history_survived(reopened.partition("p", 0))


def test_producer_state_survives_an_unclean_stop_on_disk(tmp_path, clock: ManualClock) -> None:
    log = Log.open(tmp_path, clock=clock)
    log.create_topic("p", 1)
    _history(log.partition("p", 0))
    del log  # the process stops: no close, no snapshot, no clean-shutdown flag
    with Log.open(tmp_path, clock=clock) as reopened:
        partition = reopened.partition("p", 0)
        assert [r.offset for r in read_all(partition)] == list(range(6))
        _check_history_survived(partition)


def test_producer_state_table_round_trip() -> None:
    table = ProducerStateTable()
    header = parse_header(idempotent_batch(3, producer_id=9, epoch=2, sequence=7))
    table.update(header._replace(base_offset=40), now_ms=123)
    copy = ProducerStateTable.from_bytes(table.to_bytes())
    entry = copy.producers[9]
    assert (entry.epoch, entry.last_append_ms, entry.last_sequence) == (2, 123, 9)
    assert copy.last_offsets() == {9: 40}
    original = copy.check(header, topic_partition="t/0")
    assert original is not None
    assert (original.base_offset, original.last_offset) == (40, 42)
    assert copy.expire(now_ms=123 + 1000, expiration_ms=999) == 1
    assert copy.producers == {}


def test_many_producers_in_one_partition(make_partition: PartitionFactory) -> None:
    partition = make_partition({"segment.bytes": 2000})
    for round_ in range(5):
        for producer_id in range(20):
            result = partition.append(idempotent_batch(1, producer_id=producer_id, sequence=round_))
            assert result.base_offset == round_ * 20 + producer_id
    assert partition.statistics().producers == 20
    for producer_id in range(20):
        assert partition.append(idempotent_batch(1, producer_id=producer_id, sequence=4)).duplicate
