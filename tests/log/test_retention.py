"""Retention by time and size, DeleteRecords, and the log start offset they move."""

from __future__ import annotations

import pytest
from streamer.log import Log, ManualClock, MemoryFilesystem, OffsetOutOfRangeError, PartitionLog

from .batches import ROOT, T0_MS, PartitionFactory, Record, build_batch, read_all, records

HOUR_MS = 3600 * 1000


def _batch_at(timestamp_ms: int, count: int = 2, prefix: str = "") -> bytes:
    """A batch whose records all carry ``timestamp_ms``."""
    return build_batch(
        [Record(r.key, r.value, timestamp_ms) for r in records(count, prefix=prefix)]
    )


def _fill(partition: PartitionLog, clock: ManualClock, batches: int, step_ms: int) -> None:
    """Append ``batches`` two-record batches, stamped with the clock, ``step_ms`` apart."""
    for i in range(batches):
        partition.append(_batch_at(clock.time_ms(), prefix=f"{i}-"))
        clock.advance(step_ms)


def test_retention_ms_deletes_whole_old_segments(
    make_partition: PartitionFactory, clock: ManualClock, fs: MemoryFilesystem
) -> None:
    segment_bytes = len(_batch_at(T0_MS, prefix="0-")) * 2
    partition = make_partition({"retention.ms": HOUR_MS, "segment.bytes": segment_bytes})
    _fill(partition, clock, batches=8, step_ms=10 * 60 * 1000)  # one every 10 minutes
    assert [s.base_offset for s in partition.segments] == [0, 4, 8, 12]
    # Now T0+80min: the cutoff is T0+20min, and segment 0's largest timestamp is T0+10min.
    assert partition.apply_retention() == 1
    assert partition.log_start_offset == 4
    assert [s.base_offset for s in partition.segments] == [4, 8, 12]
    assert not fs.exists(f"{partition.directory}/00000000000000000000.log")
    with pytest.raises(OffsetOutOfRangeError):
        partition.read(3)
    assert [r.offset for r in read_all(partition)] == list(range(4, 16))
    clock.advance(10 * 60 * 1000)  # the cutoff reaches segment 4's largest timestamp
    assert partition.apply_retention() == 0
    clock.advance(1)
    assert partition.apply_retention() == 1
    assert partition.log_start_offset == 8
    assert partition.log_end_offset == 16


def test_retention_uses_the_largest_timestamp_not_the_first(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": HOUR_MS, "segment.bytes": 150})
    old_then_new = [Record(b"a", b"1", T0_MS - 10 * HOUR_MS), Record(b"b", b"2", T0_MS)]
    partition.append(build_batch(old_then_new))
    partition.append(_batch_at(T0_MS))  # rolls: the first segment is closed
    assert len(partition.segments) == 2
    clock.advance(HOUR_MS)
    assert partition.apply_retention() == 0
    clock.advance(1)
    assert partition.apply_retention() == 2  # both expired: the active one rolled first


def test_expired_active_segment_rolls_then_goes(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": 1000})
    partition.append(_batch_at(T0_MS, count=5))
    assert len(partition.segments) == 1
    clock.advance(1001)
    assert partition.apply_retention() == 1
    assert len(partition.segments) == 1
    assert partition.active.base_offset == 5
    assert partition.active.is_empty
    assert (partition.log_start_offset, partition.log_end_offset) == (5, 5)
    assert partition.read(5).records == b""
    assert partition.append(_batch_at(clock.time_ms())).base_offset == 5


def test_active_segment_is_kept_while_unexpired(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": 1000, "retention.bytes": 0})
    partition.append(_batch_at(T0_MS, count=5))
    clock.advance(1000)
    assert partition.apply_retention() == 0  # retention.bytes never takes the active one
    assert (partition.log_start_offset, partition.log_end_offset) == (0, 5)


def test_records_from_the_future_are_kept(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": 1000, "segment.bytes": 100})
    partition.append(_batch_at(T0_MS + 10 * HOUR_MS))
    partition.append(_batch_at(T0_MS))
    clock.advance(HOUR_MS)
    assert partition.apply_retention() == 0
    assert partition.log_start_offset == 0


def test_retention_ms_minus_one_keeps_everything(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": -1, "segment.bytes": 100})
    _fill(partition, clock, batches=5, step_ms=HOUR_MS)
    clock.advance(1000 * HOUR_MS)
    assert partition.apply_retention() == 0
    assert partition.log_start_offset == 0
    assert len(partition.segments) == 5


def test_retention_bytes_deletes_the_oldest_segments(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    batch_bytes = len(_batch_at(T0_MS, prefix="0-"))
    partition = make_partition(
        {"retention.ms": -1, "retention.bytes": 3 * batch_bytes, "segment.bytes": batch_bytes}
    )
    _fill(partition, clock, batches=6, step_ms=1)
    assert len(partition.segments) == 6
    sizes = [segment.size for segment in partition.segments]
    assert sizes == [batch_bytes] * 6
    assert partition.apply_retention() == 3  # keep 3 * batch_bytes, active included
    assert [s.base_offset for s in partition.segments] == [6, 8, 10]
    assert partition.log_start_offset == 6
    assert sum(s.size for s in partition.segments) == 3 * batch_bytes
    assert partition.apply_retention() == 0


def test_retention_bytes_keeps_a_segment_that_would_leave_too_little(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    batch_bytes = len(_batch_at(T0_MS, prefix="0-"))
    partition = make_partition(
        {"retention.ms": -1, "retention.bytes": 2 * batch_bytes + 1, "segment.bytes": batch_bytes}
    )
    _fill(partition, clock, batches=4, step_ms=1)
    # 4 segments; removing the oldest two would leave 2 * batch_bytes < the limit.
    assert partition.apply_retention() == 1
    assert len(partition.segments) == 3


def test_compact_only_topics_are_not_deleted_by_retention(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition(
        {"cleanup.policy": "compact", "retention.ms": 1, "segment.bytes": 100}
    )
    _fill(partition, clock, batches=3, step_ms=HOUR_MS)
    assert partition.apply_retention() == 0
    assert partition.log_start_offset == 0


def test_maintenance_applies_retention(
    make_partition: PartitionFactory, log: Log, clock: ManualClock
) -> None:
    partition = make_partition({"retention.ms": 1000, "segment.bytes": 100})
    _fill(partition, clock, batches=3, step_ms=0)
    clock.advance(1001)
    log.run_maintenance()
    assert partition.log_start_offset == 6
    assert len(partition.segments) == 1


def test_segment_ms_rolls_on_maintenance_and_on_append(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"segment.ms": 1000})
    partition.append(_batch_at(T0_MS))
    clock.advance(999)
    partition.run_maintenance()
    assert len(partition.segments) == 1
    clock.advance(1)
    partition.run_maintenance()
    assert [s.base_offset for s in partition.segments] == [0, 2]
    partition.append(_batch_at(T0_MS))
    clock.advance(1000)
    partition.append(_batch_at(T0_MS))  # the active segment is old: the append rolls first
    assert [s.base_offset for s in partition.segments] == [0, 2, 4]


def test_log_start_offset_survives_reopen_after_retention(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        log.create_topic("r", 1, {"retention.ms": 1000, "segment.bytes": 100})
        partition = log.partition("r", 0)
        _fill(partition, clock, batches=4, step_ms=0)
        clock.advance(2000)
        partition.append(_batch_at(clock.time_ms()))
        assert partition.apply_retention() == 4
        assert partition.log_start_offset == 8
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        partition = log.partition("r", 0)
        assert (partition.log_start_offset, partition.log_end_offset) == (8, 10)
        assert [r.offset for r in read_all(partition)] == [8, 9]


# -- DeleteRecords ------------------------------------------------------------------------


def test_delete_records_raises_the_log_start(
    make_partition: PartitionFactory, fs: MemoryFilesystem
) -> None:
    partition = make_partition({"segment.bytes": 100})
    for i in range(5):
        partition.append(_batch_at(T0_MS, prefix=f"{i}-"))
    assert [s.base_offset for s in partition.segments] == [0, 2, 4, 6, 8]
    assert partition.delete_records(5) == 5
    assert partition.log_start_offset == 5
    assert [s.base_offset for s in partition.segments] == [4, 6, 8]  # 4-5 still holds 5
    assert not fs.exists(f"{partition.directory}/00000000000000000002.log")
    with pytest.raises(OffsetOutOfRangeError):
        partition.read(4)
    # A read from the log start returns the whole batch that holds it.
    assert [r.offset for r in read_all(partition)] == [4, 5, 6, 7, 8, 9]
    assert partition.delete_records(3) == 5  # never moves back
    assert partition.delete_records(-1) == 10  # -1: up to the high watermark
    assert partition.log_start_offset == partition.log_end_offset == 10
    assert partition.read(10).records == b""
    assert partition.append(_batch_at(T0_MS)).base_offset == 10


@pytest.mark.parametrize("offset", [11, -2])
def test_delete_records_beyond_the_high_watermark_is_refused(
    partition: PartitionLog, offset: int
) -> None:
    partition.append(_batch_at(T0_MS, count=10))
    with pytest.raises(OffsetOutOfRangeError):
        partition.delete_records(offset)
    assert partition.log_start_offset == 0


def test_delete_records_persists_across_reopen(fs: MemoryFilesystem, clock: ManualClock) -> None:
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        log.create_topic("d", 1, {"segment.bytes": 100})
        partition = log.partition("d", 0)
        for i in range(4):
            partition.append(_batch_at(T0_MS, prefix=f"{i}-"))
        partition.delete_records(3)
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        partition = log.partition("d", 0)
        assert partition.log_start_offset == 3
        with pytest.raises(OffsetOutOfRangeError):
            partition.read(2)
        assert partition.append(_batch_at(T0_MS)).base_offset == 8


def test_delete_records_persists_across_a_crash(fs: MemoryFilesystem, clock: ManualClock) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("d", 1)
    partition = log.partition("d", 0)
    partition.append(_batch_at(T0_MS, count=6))
    partition.delete_records(4)
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as reopened:
        partition = reopened.partition("d", 0)
        assert (partition.log_start_offset, partition.log_end_offset) == (4, 6)
        assert partition.offset_for_timestamp(T0_MS) == 4
