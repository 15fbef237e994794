"""Looking offsets up by timestamp (ListOffsets), and the log's offset markers."""

from __future__ import annotations

import pytest
from streamer.log import Log, ManualClock, MemoryFilesystem, PartitionLog

from .batches import ROOT, T0_MS, PartitionFactory, Record, build_batch, records


def _timestamped(*timestamps: int, prefix: str = "") -> bytes:
    return build_batch(
        [Record(f"{prefix}{i}".encode(), b"v", T0_MS + ts) for i, ts in enumerate(timestamps)]
    )


def test_empty_log_has_no_offset_for_any_time(partition: PartitionLog) -> None:
    assert partition.offset_for_timestamp(0) is None
    assert partition.offset_for_timestamp(T0_MS) is None


def test_first_offset_at_or_after_a_timestamp(partition: PartitionLog) -> None:
    partition.append(_timestamped(0, 10, 20))  # offsets 0-2
    partition.append(_timestamped(30, 40))  # offsets 3-4
    expected = {
        -(10**9): 0,
        0: 0,
        1: 1,
        10: 1,
        11: 2,
        20: 2,
        21: 3,
        30: 3,
        31: 4,
        40: 4,
    }
    for delta, offset in expected.items():
        assert partition.offset_for_timestamp(T0_MS + delta) == offset, delta
    assert partition.offset_for_timestamp(T0_MS + 41) is None


def test_within_a_batch_with_unordered_timestamps(partition: PartitionLog) -> None:
    partition.append(_timestamped(50, 10, 30, 20, 60))
    # The first record (by offset) whose timestamp reaches the target, as Kafka answers.
    assert partition.offset_for_timestamp(T0_MS + 10) == 0
    assert partition.offset_for_timestamp(T0_MS + 55) == 4
    assert partition.offset_for_timestamp(T0_MS + 50) == 0
    assert partition.offset_for_timestamp(T0_MS + 61) is None


def test_across_segments(make_partition: PartitionFactory) -> None:
    partition = make_partition({"segment.bytes": 300, "index.interval.bytes": 1})
    for i in range(30):
        partition.append(_timestamped(100 * i, 100 * i + 50, prefix=f"{i}-"))
    assert len(partition.segments) > 5
    for i in range(30):
        assert partition.offset_for_timestamp(T0_MS + 100 * i) == 2 * i
        assert partition.offset_for_timestamp(T0_MS + 100 * i + 1) == 2 * i + 1
        assert partition.offset_for_timestamp(T0_MS + 100 * i + 50) == 2 * i + 1
        after = partition.offset_for_timestamp(T0_MS + 100 * i + 51)
        assert after == (2 * i + 2 if i < 29 else None)


def test_an_older_timestamp_later_in_the_log(partition: PartitionLog) -> None:
    partition.append(_timestamped(100))
    partition.append(_timestamped(5))  # a late record: offset 1, an old timestamp
    partition.append(_timestamped(200))
    assert partition.offset_for_timestamp(T0_MS + 1) == 0
    assert partition.offset_for_timestamp(T0_MS + 101) == 2


@pytest.mark.parametrize("codec", [1, 4])
def test_compressed_batches(partition: PartitionLog, codec: int) -> None:
    partition.append(build_batch(records(10, timestamp_ms=T0_MS), codec=codec))
    partition.append(build_batch(records(10, timestamp_ms=T0_MS + 10), codec=codec))
    for delta in range(20):
        assert partition.offset_for_timestamp(T0_MS + delta) == delta


def test_log_append_time_uses_the_append_time(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"message.timestamp.type": "LogAppendTime"})
    partition.append(build_batch(records(3, timestamp_ms=T0_MS + 10**9)))
    clock.advance(1000)
    partition.append(build_batch(records(2, timestamp_ms=0)))
    assert partition.offset_for_timestamp(T0_MS) == 0
    assert partition.offset_for_timestamp(T0_MS + 1) == 3
    assert partition.offset_for_timestamp(T0_MS + 1000) == 3
    assert partition.offset_for_timestamp(T0_MS + 1001) is None


def test_lookup_never_answers_below_the_log_start(partition: PartitionLog) -> None:
    partition.append(_timestamped(0, 10, 20, 30))
    partition.delete_records(2)
    assert partition.offset_for_timestamp(T0_MS) == 2
    assert partition.offset_for_timestamp(T0_MS + 25) == 3


def test_lookup_below_log_start_with_unordered_timestamps(partition: PartitionLog) -> None:
    partition.append(_timestamped(40, 10, 20, 50))
    partition.delete_records(1)
    # Offset 0 (timestamp 40) is deleted; offsets 1 and 2 are older than 30: answer 3.
    assert partition.offset_for_timestamp(T0_MS + 30) == 3


def test_lookup_after_reopen_uses_the_saved_time_index(
    log: Log, fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log.create_topic("times", 1, {"segment.bytes": 200, "index.interval.bytes": 1})
    partition = log.partition("times", 0)
    for i in range(20):
        partition.append(_timestamped(10 * i, prefix=f"{i}-"))
    targets = range(0, 200, 5)
    expected = [t // 10 + (t % 10 > 0) if t <= 190 else None for t in targets]
    assert [partition.offset_for_timestamp(T0_MS + t) for t in targets] == expected
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        partition = reopened.partition("times", 0)
        assert len(partition.segments) > 3
        assert [partition.offset_for_timestamp(T0_MS + t) for t in targets] == expected


# -- offset markers -----------------------------------------------------------------------


def test_log_start_end_and_high_watermark(partition: PartitionLog) -> None:
    assert (partition.log_start_offset, partition.log_end_offset) == (0, 0)
    assert partition.high_watermark == 0
    partition.append(build_batch(4))
    assert (partition.log_start_offset, partition.log_end_offset) == (0, 4)
    assert partition.high_watermark == 4
    partition.delete_records(3)
    assert (partition.log_start_offset, partition.log_end_offset) == (3, 4)
    result = partition.read(3)
    assert (result.log_start_offset, result.log_end_offset, result.high_watermark) == (3, 4, 4)
    assert partition.append(build_batch(1)).log_start_offset == 3


def test_records_whose_offsets_disagree_with_their_batch_answer_with_the_batch() -> None:
    # Found by hypothesis: append checks framing and CRC, not the records inside, so a
    # record may claim an offset delta past lastOffsetDelta. The lookup must stay inside
    # the batch that qualified.
    from streamer.log import Log, ManualClock

    log = Log.memory(clock=ManualClock())
    log.create_topic("t", 1)
    partition = log.partition("t", 0)
    claims_two = (
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x008\x00\x00\x00\x00\x02\xea\xd81\xfe"
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x01"
        b"\x0c\x00\x00\x04\x00\x01\x00"
    )
    partition.append(claims_two)
    partition.append(build_batch(1))
    assert partition.offset_for_timestamp(0) == 0
