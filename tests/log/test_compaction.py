"""Log compaction: latest record per key, offsets kept, tombstones, producers, restarts."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from streamer.log import Log, ManualClock, MemoryFilesystem, PartitionLog, compact

from .batches import (
    ROOT,
    T0_MS,
    PartitionFactory,
    Record,
    build_batch,
    idempotent_batch,
    partition_files,
    read_all,
    read_batches,
    split_wire,
)

COMPACT = {"cleanup.policy": "compact"}
DAY_MS = 24 * 3600 * 1000


def put(partition: PartitionLog, key: bytes | None, value: bytes | None, **batch: int) -> int:
    return partition.append(build_batch([Record(key, value, T0_MS)], **batch)).base_offset


def contents(partition: PartitionLog) -> dict[int, tuple[bytes | None, bytes | None]]:
    return {r.offset: (r.key, r.value) for r in read_all(partition)}


def active_bytes(fs: MemoryFilesystem, partition: PartitionLog) -> bytes:
    return fs.read_file(partition.active.path)


def test_keeps_the_last_record_of_each_key_and_their_offsets(
    make_partition: PartitionFactory, fs: MemoryFilesystem
) -> None:
    partition = make_partition({**COMPACT, "segment.bytes": 300})
    writes = [
        (b"a", b"1"),
        (b"b", b"1"),
        (b"a", b"2"),
        (b"c", b"1"),
        (b"b", b"2"),
        (b"a", b"3"),
        (b"d", b"1"),
        (b"c", b"2"),
    ]
    for key, value in writes:
        put(partition, key, value)
    partition.roll()
    put(partition, b"d", b"2")  # in the active segment: supersedes offset 6
    put(partition, b"d", b"3")
    active_before = active_bytes(fs, partition)
    result = compact(partition)
    assert contents(partition) == {
        4: (b"b", b"2"),
        5: (b"a", b"3"),
        7: (b"c", b"2"),
        8: (b"d", b"2"),  # the active segment is never rewritten, superseded or not
        9: (b"d", b"3"),
    }
    assert result.records_removed == 5
    assert (result.segments_before, result.segments_after) == (2, 2)  # too big to merge
    assert result.bytes_after < result.bytes_before
    assert active_bytes(fs, partition) == active_before
    assert (partition.log_start_offset, partition.log_end_offset) == (0, 10)
    assert put(partition, b"e", b"1") == 10


def test_reads_inside_gaps_return_the_next_batch(make_partition: PartitionFactory) -> None:
    partition = make_partition(COMPACT)
    for value in (b"1", b"2", b"3"):
        put(partition, b"k", value)
    put(partition, b"other", b"1")
    partition.roll()
    put(partition, b"k", b"4")
    compact(partition)
    assert contents(partition) == {3: (b"other", b"1"), 4: (b"k", b"4")}
    for offset in (0, 1, 2, 3):
        first = DefaultRecordBatch(split_wire(partition.read(offset).records)[0])
        assert first.base_offset == 3
    assert partition.read(0).log_start_offset == 0


def test_records_keep_offsets_within_a_rewritten_batch(make_partition: PartitionFactory) -> None:
    partition = make_partition(COMPACT)
    partition.append(
        build_batch(
            [
                Record(b"a", b"1", T0_MS),
                Record(b"b", b"1", T0_MS + 1),
                Record(b"a", b"2", T0_MS + 2),
                Record(None, b"keyless", T0_MS + 3),
                Record(b"b", b"2", T0_MS + 4),
            ],
            codec=4,
        )
    )
    partition.roll()
    compact(partition)
    [batch] = read_batches(partition)
    decoded = DefaultRecordBatch(batch)
    assert decoded.validate_crc()
    assert decoded.compression_type == 4
    assert (decoded.base_offset, decoded.last_offset_delta) == (0, 4)
    assert [(r.offset, r.key, r.value, r.timestamp) for r in DefaultRecordBatch(batch)] == [
        (2, b"a", b"2", T0_MS + 2),
        (3, None, b"keyless", T0_MS + 3),
        (4, b"b", b"2", T0_MS + 4),
    ]
    assert partition.offset_for_timestamp(T0_MS) == 2
    assert partition.append(build_batch(1)).base_offset == 5


def test_keyless_records_are_always_kept(make_partition: PartitionFactory) -> None:
    partition = make_partition(COMPACT)
    for _ in range(3):
        put(partition, None, b"same")
    partition.roll()
    assert compact(partition).records_removed == 0
    assert list(contents(partition)) == [0, 1, 2]


def test_the_active_segment_alone_is_never_compacted(
    make_partition: PartitionFactory, fs: MemoryFilesystem
) -> None:
    partition = make_partition(COMPACT)
    for value in (b"1", b"2", b"3"):
        put(partition, b"k", value)
    before = active_bytes(fs, partition)
    result = compact(partition)
    assert (result.segments_before, result.records_removed) == (0, 0)
    assert active_bytes(fs, partition) == before
    assert list(contents(partition)) == [0, 1, 2]


def test_log_append_time_batches_keep_their_time(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({**COMPACT, "message.timestamp.type": "LogAppendTime"})
    clock.advance(5000)
    partition.append(build_batch([Record(b"a", b"1", 1), Record(b"b", b"1", 2)]))
    put(partition, b"a", b"2")
    partition.roll()
    compact(partition)
    first = read_batches(partition)[0]
    decoded = DefaultRecordBatch(first)
    assert decoded.validate_crc()
    assert decoded.timestamp_type == 1
    assert decoded.max_timestamp == T0_MS + 5000
    assert [(r.offset, r.key, r.timestamp) for r in DefaultRecordBatch(first)] == [
        (1, b"b", T0_MS + 5000)
    ]


# -- tombstones ---------------------------------------------------------------------------


def test_tombstones_stay_for_delete_retention_after_first_cleaning(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({**COMPACT, "delete.retention.ms": 1000})
    put(partition, b"a", b"1")
    put(partition, b"b", b"1")
    put(partition, b"a", None)
    partition.roll()
    put(partition, b"c", b"1")
    compact(partition)
    assert contents(partition) == {1: (b"b", b"1"), 2: (b"a", None), 3: (b"c", b"1")}
    clock.advance(999)
    compact(partition)
    assert contents(partition) == {1: (b"b", b"1"), 2: (b"a", None), 3: (b"c", b"1")}
    clock.advance(1)
    assert compact(partition).records_removed == 1
    assert contents(partition) == {1: (b"b", b"1"), 3: (b"c", b"1")}


def test_tombstones_in_newly_cleaned_segments_get_their_full_retention(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({**COMPACT, "delete.retention.ms": 1000})
    put(partition, b"a", b"1")
    partition.roll()
    compact(partition)  # segment 0 is first cleaned now
    clock.advance(1000)
    put(partition, b"b", b"1")
    put(partition, b"b", None)
    partition.roll()
    put(partition, b"c", b"1")
    compact(partition)  # the new segment merges with segment 0
    assert contents(partition) == {0: (b"a", b"1"), 2: (b"b", None), 3: (b"c", b"1")}
    clock.advance(999)
    compact(partition)
    assert 2 in contents(partition)
    clock.advance(1)
    compact(partition)
    assert contents(partition) == {0: (b"a", b"1"), 3: (b"c", b"1")}


def test_a_tombstone_in_the_active_segment_removes_older_values(
    make_partition: PartitionFactory,
) -> None:
    partition = make_partition(COMPACT)
    put(partition, b"a", b"1")
    partition.roll()
    put(partition, b"a", None)
    compact(partition)
    assert contents(partition) == {1: (b"a", None)}


# -- idempotent producers -----------------------------------------------------------------


def test_a_producers_last_batch_is_kept_empty(
    make_partition: PartitionFactory,
) -> None:
    partition = make_partition(COMPACT)
    partition.append(idempotent_batch(1, producer_id=7, sequence=0, prefix="p"))
    partition.append(idempotent_batch(1, producer_id=7, sequence=1, prefix="p"))
    put(partition, b"pkey-0", b"newer")  # supersedes both of producer 7's records
    partition.roll()
    compact(partition)
    batches = [DefaultRecordBatch(batch) for batch in read_batches(partition)]
    assert [(b.base_offset, b.producer_id, b.base_sequence) for b in batches] == [
        (1, 7, 1),  # producer 7's first batch is gone; its last one is kept, empty
        (2, -1, -1),
    ]
    assert list(DefaultRecordBatch(read_batches(partition)[0])) == []
    assert contents(partition) == {2: (b"pkey-0", b"newer")}
    retry = partition.append(idempotent_batch(1, producer_id=7, sequence=1, prefix="p"))
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (1, 1)


def _compacted_producer_log(fs: MemoryFilesystem, clock: ManualClock) -> Log:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("c", 1, COMPACT)
    partition = log.partition("c", 0)
    partition.append(idempotent_batch(2, producer_id=7, sequence=0, prefix="p"))
    partition.append(build_batch([Record(b"pkey-0", b"x"), Record(b"pkey-1", b"y")]))
    partition.roll()
    compact(partition)
    assert contents(partition) == {2: (b"pkey-0", b"x"), 3: (b"pkey-1", b"y")}
    return log


def _retry_is_a_duplicate(log: Log) -> None:
    partition = log.partition("c", 0)
    retry = partition.append(idempotent_batch(2, producer_id=7, sequence=0, prefix="p"))
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (0, 1)
    assert partition.append(idempotent_batch(1, producer_id=7, sequence=2)).base_offset == 4


def test_producer_state_survives_compaction_and_reopen(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    _compacted_producer_log(fs, clock).close()
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        _retry_is_a_duplicate(log)


def test_producer_state_is_rebuilt_from_the_empty_batch(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = _compacted_producer_log(fs, clock)
    directory = log.partition("c", 0).directory
    log.close()
    for name in fs.listdir(directory):
        if name.endswith(".snapshot"):
            fs.remove(f"{directory}/{name}")  # only the batch headers remain to rebuild from
    with Log.open(ROOT, fs=fs, clock=clock) as log:
        _retry_is_a_duplicate(log)


def test_producer_state_survives_compaction_and_a_crash(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    _compacted_producer_log(fs, clock)
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as log:
        _retry_is_a_duplicate(log)


# -- restarts and maintenance -------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["close", "crash"])
def test_compacted_partition_survives_reopen(
    fs: MemoryFilesystem, clock: ManualClock, crash: bool
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("c", 1, {**COMPACT, "segment.bytes": 250})
    partition = log.partition("c", 0)
    for round_ in range(6):
        for key in (b"a", b"b", b"c"):
            put(partition, key, b"%d" % round_)
    put(partition, None, b"keyless")
    partition.roll()
    put(partition, b"a", b"last")
    compact(partition)
    expected = contents(partition)
    assert expected == {
        16: (b"b", b"5"),
        17: (b"c", b"5"),
        18: (None, b"keyless"),
        19: (b"a", b"last"),
    }
    files = partition_files(fs, partition)
    if crash:
        fs = fs.crash()
    else:
        log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        partition = reopened.partition("c", 0)
        assert partition.recovery_notes == []
        assert contents(partition) == expected
        assert partition_files(fs, partition) == files
        assert (partition.log_start_offset, partition.log_end_offset) == (0, 20)
        for offset in range(20):
            assert partition.read(offset).records  # gaps lead to the next batch
        assert put(partition, b"b", b"6") == 20
        partition.roll()
        compact(partition)
        assert contents(partition) == {
            18: (None, b"keyless"),
            19: (b"a", b"last"),
            17: (b"c", b"5"),
            20: (b"b", b"6"),
        }


def test_maintenance_compacts_compacted_topics(
    log: Log, clock: ManualClock, fs: MemoryFilesystem
) -> None:
    log.create_topic("c", 1, {**COMPACT, "segment.bytes": 200})
    log.create_topic("plain", 1, {"segment.bytes": 200})
    for name in ("c", "plain"):
        partition = log.partition(name, 0)
        for round_ in range(8):
            put(partition, b"k", b"%d" % round_)
    log.run_maintenance()
    assert list(contents(log.partition("c", 0))) == [6, 7]  # both in the active segment
    assert list(contents(log.partition("plain", 0))) == list(range(8))


def test_small_cleaned_segments_are_merged(
    make_partition: PartitionFactory, fs: MemoryFilesystem
) -> None:
    partition = make_partition({**COMPACT, "segment.bytes": 1000})
    for i in range(5):
        put(partition, b"k%d" % i, b"1")
        partition.roll()
    assert len(partition.segments) == 6
    result = compact(partition)
    assert (result.segments_before, result.segments_after, result.records_removed) == (5, 1, 0)
    assert [s.base_offset for s in partition.segments] == [0, 5]
    assert sorted(name for name in fs.listdir(partition.directory) if name.endswith(".log")) == [
        "00000000000000000000.log",
        "00000000000000000005.log",
    ]
    assert list(contents(partition)) == [0, 1, 2, 3, 4]


def test_maintenance_waits_for_the_dirty_ratio(log: Log) -> None:
    log.create_topic("c", 1, {**COMPACT, "min.cleanable.dirty.ratio": "0.6"})
    partition = log.partition("c", 0)
    for key in (b"a", b"b", b"c", b"d"):
        put(partition, key, b"1")
    partition.roll()
    log.run_maintenance()  # all of it is dirty: cleaned (nothing to remove)
    put(partition, b"a", b"2")
    partition.roll()
    log.run_maintenance()  # 1 dirty batch out of 5: below the ratio
    assert list(contents(partition)) == [0, 1, 2, 3, 4]
    for key in (b"b", b"c"):
        put(partition, key, b"2")
        partition.roll()
    log.run_maintenance()  # 3 dirty out of 7 closed batches: still below 0.6
    assert list(contents(partition)) == [0, 1, 2, 3, 4, 5, 6]
    put(partition, b"d", b"2")
    partition.roll()
    put(partition, b"a", b"3")
    partition.roll()
    log.run_maintenance()  # 5 of 9: 0.56; a sixth makes 6 of 10
    put(partition, b"e", b"1")
    partition.roll()
    log.run_maintenance()
    assert contents(partition) == {
        5: (b"b", b"2"),
        6: (b"c", b"2"),
        7: (b"d", b"2"),
        8: (b"a", b"3"),
        9: (b"e", b"1"),
    }


def test_compact_and_delete_applies_both(
    make_partition: PartitionFactory, log: Log, clock: ManualClock
) -> None:
    partition = make_partition(
        {"cleanup.policy": "compact,delete", "retention.ms": DAY_MS, "segment.bytes": 150}
    )
    put(partition, b"a", b"1")
    put(partition, b"a", b"2")
    put(partition, b"b", b"1")
    log.run_maintenance()
    assert contents(partition) == {1: (b"a", b"2"), 2: (b"b", b"1")}
    clock.advance(2 * DAY_MS)
    log.run_maintenance()
    assert contents(partition) == {}
    assert partition.log_start_offset == partition.log_end_offset == 3
