"""Appending batches and reading them back: offsets, bytes, budgets, ranges, validation."""

from __future__ import annotations

import random
import struct
import threading
from pathlib import Path

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from streamer.log import (
    CorruptRecordError,
    InvalidRecordError,
    Log,
    LogError,
    ManualClock,
    MemoryFilesystem,
    OffsetOutOfRangeError,
    PartitionLog,
    RecordTooLargeError,
)

from .batches import (
    T0_MS,
    PartitionFactory,
    Record,
    build_batch,
    decode,
    idempotent_batch,
    partition_files,
    patch,
    read_all,
    read_batches,
    records,
    split_wire,
)


def assert_stored_verbatim(stored: bytes, sent: bytes, base_offset: int) -> None:
    """Stored bytes equal what was sent except baseOffset and partitionLeaderEpoch."""
    assert len(stored) == len(sent)
    assert struct.unpack_from(">q", stored, 0)[0] == base_offset
    assert stored[8:12] == sent[8:12]  # batchLength
    assert struct.unpack_from(">i", stored, 12)[0] == 0  # the leader epoch of a new log
    assert stored[16:] == sent[16:]
    assert DefaultRecordBatch(stored).validate_crc()


# -- offsets ------------------------------------------------------------------------------


def test_offsets_are_contiguous_across_batches(partition: PartitionLog) -> None:
    sizes = [1, 3, 2, 5, 1]
    results = [partition.append(build_batch(size)) for size in sizes]
    expected_base = 0
    for size, result in zip(sizes, results, strict=True):
        assert result.base_offset == expected_base
        assert result.last_offset == expected_base + size - 1
        assert result.log_append_time_ms == -1
        assert result.log_start_offset == 0
        assert not result.duplicate
        expected_base += size
    assert partition.log_end_offset == partition.high_watermark == sum(sizes)
    assert [r.offset for r in read_all(partition)] == list(range(sum(sizes)))


def test_offsets_are_contiguous_across_segment_rolls(make_partition: PartitionFactory) -> None:
    sent = [build_batch(records(4, prefix=f"b{i}-")) for i in range(10)]
    assert len({len(data) for data in sent}) == 1
    partition = make_partition({"segment.bytes": len(sent[0]) * 3})
    for i, data in enumerate(sent):
        assert partition.append(data).base_offset == 4 * i
    assert len(partition.segments) == 4  # three batches per segment
    assert [segment.base_offset for segment in partition.segments] == [0, 12, 24, 36]
    stored = read_batches(partition)
    assert len(stored) == 10
    for i, (got, data) in enumerate(zip(stored, sent, strict=True)):
        assert_stored_verbatim(got, data, 4 * i)
    assert [r.offset for r in read_all(partition)] == list(range(40))


def test_a_batch_larger_than_a_segment_gets_its_own(make_partition: PartitionFactory) -> None:
    partition = make_partition({"segment.bytes": 100})
    for _ in range(3):
        partition.append(build_batch(5))
    assert [segment.base_offset for segment in partition.segments] == [0, 5, 10]
    assert partition.log_end_offset == 15


def test_multiple_batches_in_one_append(partition: PartitionLog) -> None:
    sent = [build_batch(2), build_batch(records(3, prefix="x")), build_batch(1, codec=1)]
    result = partition.append(b"".join(sent))
    assert (result.base_offset, result.last_offset) == (0, 5)
    stored = split_wire(partition.read(0).records)
    for got, data, base in zip(stored, sent, [0, 2, 5], strict=True):
        assert_stored_verbatim(got, data, base)
    assert partition.append(build_batch(1)).base_offset == 6


def test_records_read_back_with_keys_values_headers_and_timestamps(
    partition: PartitionLog,
) -> None:
    sent = [
        Record(b"k", b"v", T0_MS + 5, (("h", b"x"), ("trace", b"\x00\x01"))),
        Record(None, b"keyless", T0_MS + 1, ()),
        Record(b"tombstone", None, T0_MS + 9, ()),
    ]
    partition.append(build_batch(sent))
    [batch] = split_wire(partition.read(0).records)
    decoded = list(DefaultRecordBatch(batch))
    assert [(r.offset, r.key, r.value, r.timestamp) for r in decoded] == [
        (0, b"k", b"v", T0_MS + 5),
        (1, None, b"keyless", T0_MS + 1),
        (2, b"tombstone", None, T0_MS + 9),
    ]
    assert [list(r.headers) for r in decoded] == [
        [("h", b"x"), ("trace", b"\x00\x01")],
        [],
        [],
    ]


@pytest.mark.parametrize("codec", [1, 2, 3, 4], ids=["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_verbatim(partition: PartitionLog, codec: int) -> None:
    sent = [build_batch(records(20, prefix=f"c{i}-"), codec=codec) for i in range(3)]
    for data in sent:
        partition.append(data)
    stored = read_batches(partition)
    for i, (got, data) in enumerate(zip(stored, sent, strict=True)):
        assert_stored_verbatim(got, data, 20 * i)
        assert DefaultRecordBatch(got).compression_type == codec
    assert [r.value for r in read_all(partition)][:2] == [b"c0-value-0", b"c0-value-1"]
    assert [r.offset for r in read_all(partition)] == list(range(60))


# -- reading ------------------------------------------------------------------------------


def test_read_from_the_middle_of_a_batch_returns_that_batch(partition: PartitionLog) -> None:
    partition.append(build_batch(3))
    second = build_batch(records(4, prefix="second-"))
    partition.append(second)
    partition.append(build_batch(2))
    for offset in (3, 4, 6):
        first = split_wire(partition.read(offset, max_bytes=1).records)
        assert len(first) == 1
        assert_stored_verbatim(first[0], second, 3)


def test_read_at_each_offset_starts_with_the_batch_holding_it(
    make_partition: PartitionFactory,
) -> None:
    partition = make_partition({"segment.bytes": 400, "index.interval.bytes": 100})
    sizes = [1, 2, 3, 4, 1, 2, 5, 3, 1, 1, 2]
    bases = []
    for i, size in enumerate(sizes):
        bases.append(partition.append(build_batch(records(size, prefix=f"{i}-"))).base_offset)
    assert len(partition.segments) > 2
    for offset in range(partition.log_end_offset):
        data = partition.read(offset).records
        first = DefaultRecordBatch(split_wire(data)[0])
        assert first.base_offset <= offset <= first.base_offset + first.last_offset_delta
        assert first.base_offset in bases


def test_read_respects_max_bytes_but_returns_at_least_one_batch(
    partition: PartitionLog,
) -> None:
    sent = [build_batch(records(3, prefix=f"{i}-")) for i in range(5)]
    for data in sent:
        partition.append(data)
    size = len(sent[0])
    assert all(len(data) == size for data in sent)
    assert len(split_wire(partition.read(0, max_bytes=1).records)) == 1
    assert len(split_wire(partition.read(0, max_bytes=0).records)) == 1
    assert len(split_wire(partition.read(0, max_bytes=size).records)) == 1
    assert len(split_wire(partition.read(0, max_bytes=2 * size - 1).records)) == 1
    assert len(split_wire(partition.read(0, max_bytes=2 * size).records)) == 2
    assert len(split_wire(partition.read(3, max_bytes=3 * size + 5).records)) == 3
    everything = partition.read(0, max_bytes=1 << 20).records
    assert len(everything) == 5 * size
    assert [r.offset for r in decode(everything)] == list(range(15))


def test_read_stays_within_one_segment(make_partition: PartitionFactory) -> None:
    batch = build_batch(2)
    partition = make_partition({"segment.bytes": len(batch) * 2})
    for _ in range(6):
        partition.append(build_batch(2))
    data = partition.read(0, max_bytes=1 << 20).records
    assert [r.offset for r in decode(data)] == [0, 1, 2, 3]
    assert [r.offset for r in decode(partition.read(4).records)] == [4, 5, 6, 7]


def test_read_at_log_end_is_empty(partition: PartitionLog) -> None:
    empty = partition.read(0)
    assert empty.records == b""
    assert (empty.log_start_offset, empty.log_end_offset, empty.high_watermark) == (0, 0, 0)
    partition.append(build_batch(3))
    at_end = partition.read(3)
    assert at_end.records == b""
    assert (at_end.log_start_offset, at_end.log_end_offset, at_end.high_watermark) == (0, 3, 3)


@pytest.mark.parametrize("offset", [-1, 4, 5, 1 << 40])
def test_read_outside_the_log_raises(partition: PartitionLog, offset: int) -> None:
    partition.append(build_batch(3))
    with pytest.raises(OffsetOutOfRangeError, match=f"offset {offset} is outside"):
        partition.read(offset)


def test_read_below_log_start_raises(partition: PartitionLog) -> None:
    partition.append(build_batch(3))
    partition.append(build_batch(3))
    partition.delete_records(3)
    with pytest.raises(OffsetOutOfRangeError) as raised:
        partition.read(2)
    assert raised.value.kafka_error_code == 1
    assert [r.offset for r in decode(partition.read(3).records)] == [3, 4, 5]


def test_repeated_and_backward_reads_agree(partition: PartitionLog) -> None:
    for i in range(6):
        partition.append(build_batch(records(2, prefix=f"{i}-")))
    forward = [partition.read(offset).records for offset in range(12)]
    backward = [partition.read(offset).records for offset in reversed(range(12))]
    assert forward == list(reversed(backward))


# -- LogAppendTime ------------------------------------------------------------------------


def test_log_append_time_stamps_the_batch(
    make_partition: PartitionFactory, clock: ManualClock
) -> None:
    partition = make_partition({"message.timestamp.type": "LogAppendTime"})
    clock.advance(12_345)
    sent = build_batch(records(3, timestamp_ms=1000))
    result = partition.append(sent)
    assert result.log_append_time_ms == T0_MS + 12_345
    [stored] = split_wire(partition.read(0).records)
    decoded = DefaultRecordBatch(stored)
    assert decoded.validate_crc()
    assert decoded.timestamp_type == 1
    assert decoded.max_timestamp == T0_MS + 12_345
    assert [r.timestamp for r in DefaultRecordBatch(stored)] == [T0_MS + 12_345] * 3
    assert stored[61:] == sent[61:]  # the records themselves are untouched
    assert partition.segments[-1].max_timestamp == T0_MS + 12_345


def test_create_time_keeps_producer_timestamps(partition: PartitionLog) -> None:
    result = partition.append(build_batch(records(2, timestamp_ms=1000)))
    assert result.log_append_time_ms == -1
    [stored] = split_wire(partition.read(0).records)
    assert DefaultRecordBatch(stored).timestamp_type == 0
    assert [r.timestamp for r in DefaultRecordBatch(stored)] == [1000, 1001]


# -- validation ---------------------------------------------------------------------------


def _damaged_batches() -> list[tuple[str, bytes, type[LogError], str]]:
    good = build_batch(3)
    flipped = bytearray(good)
    flipped[70] ^= 0xFF
    return [
        ("wrong crc", bytes(flipped), CorruptRecordError, "CRC"),
        ("crc field", patch(good, ">I", 17, 12345, fix_crc=False), CorruptRecordError, "CRC"),
        ("truncated", good[:-3], CorruptRecordError, "batchLength"),
        ("truncated header", good[:40], CorruptRecordError, "truncated"),
        ("trailing bytes", good + good[:20], CorruptRecordError, "truncated"),
        ("magic 1", patch(good, ">b", 16, 1, fix_crc=False), CorruptRecordError, "magic 1"),
        ("magic 0", patch(good, ">b", 16, 0, fix_crc=False), CorruptRecordError, "magic 0"),
        ("negative length", patch(good, ">i", 8, -1, fix_crc=False), CorruptRecordError, "-1"),
        (
            "huge length",
            patch(good, ">i", 8, 0x7FFFFFFF, fix_crc=False),
            CorruptRecordError,
            "2147483647",
        ),
        ("control", patch(good, ">h", 21, 0x20), InvalidRecordError, "control"),
        ("delete horizon", patch(good, ">h", 21, 0x40), InvalidRecordError, "delete-horizon"),
        ("codec 6", patch(good, ">h", 21, 0x06), InvalidRecordError, "codec 6"),
        ("delta", patch(good, ">i", 23, 7), InvalidRecordError, "lastOffsetDelta 7"),
        (
            "no records",
            patch(patch(good, ">i", 57, 0), ">i", 23, -1),
            InvalidRecordError,
            "0 records",
        ),
        ("transactional", build_batch(1, transactional=True), InvalidRecordError, "producer id"),
        ("empty", b"", CorruptRecordError, "empty"),
        (
            "two idempotent",
            build_batch(1, producer_id=5, producer_epoch=0, base_sequence=0) * 2,
            InvalidRecordError,
            "one batch",
        ),
    ]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [case[1:] for case in _damaged_batches()],
    ids=[case[0] for case in _damaged_batches()],
)
def test_malformed_input_is_refused_and_changes_nothing(
    partition: PartitionLog,
    fs: MemoryFilesystem,
    data: bytes,
    error: type[LogError],
    message: str,
) -> None:
    partition.append(build_batch(2))
    before_files = partition_files(fs, partition)
    before_end = partition.log_end_offset
    with pytest.raises(error, match=message) as raised:
        partition.append(data)
    assert type(raised.value) is error
    assert partition.log_end_offset == before_end == 2
    assert partition_files(fs, partition) == before_files
    assert partition.append(build_batch(1)).base_offset == 2


def test_one_bad_batch_refuses_the_whole_append(partition: PartitionLog, fs: MemoryFilesystem):
    bad = patch(build_batch(1), ">h", 21, 0x20)
    with pytest.raises(InvalidRecordError):
        partition.append(build_batch(2) + bad + build_batch(1))
    assert partition.log_end_offset == 0
    assert partition_files(fs, partition) == {"00000000000000000000.log": b""}


def test_record_too_large(make_partition: PartitionFactory, fs: MemoryFilesystem) -> None:
    small = build_batch(1)
    partition = make_partition({"max.message.bytes": len(small)})
    assert partition.append(small).base_offset == 0
    with pytest.raises(RecordTooLargeError, match=f"max.message.bytes={len(small)}") as raised:
        partition.append(build_batch(2))
    assert raised.value.kafka_error_code == 10
    assert partition.log_end_offset == 1
    assert partition_files(fs, partition)["00000000000000000000.log"][16:] == small[16:]


def test_error_codes_of_refused_batches(partition: PartitionLog) -> None:
    with pytest.raises(CorruptRecordError) as corrupt:
        partition.append(b"")
    assert corrupt.value.kafka_error_code == 2
    with pytest.raises(InvalidRecordError) as invalid:
        partition.append(patch(build_batch(1), ">h", 21, 0x20))
    assert invalid.value.kafka_error_code == 87


def test_append_accepts_bytearray_and_memoryview(partition: PartitionLog) -> None:
    data = build_batch(2)
    assert partition.append(bytearray(data)).base_offset == 0
    assert partition.append(memoryview(data)).base_offset == 2
    assert [r.offset for r in read_all(partition)] == [0, 1, 2, 3]


def test_sender_offsets_are_ignored(partition: PartitionLog) -> None:
    data = patch(build_batch(2), ">q", 0, 1_000_000, fix_crc=False)
    data = patch(data, ">i", 12, 77, fix_crc=False)
    assert partition.append(data).base_offset == 0
    [stored] = split_wire(partition.read(0).records)
    assert struct.unpack_from(">qii", stored) == (0, len(data) - 12, 0)


# -- on a real disk -----------------------------------------------------------------------


def test_os_filesystem_round_trip_and_reopen(tmp_path: Path) -> None:
    config = {"segment.bytes": 600, "index.interval.bytes": 150}
    sent = [build_batch(records(3, prefix=f"{i}-"), codec=i % 5) for i in range(12)]
    with Log.open(tmp_path, clock=ManualClock()) as log:
        log.create_topic("disk", 1, config)
        partition = log.partition("disk", 0)
        for i, data in enumerate(sent):
            assert partition.append(data).base_offset == 3 * i
        segments = len(partition.segments)
        assert segments > 2
        first = read_batches(partition)
    assert (tmp_path / "topics" / "disk" / "0" / "00000000000000000000.index").exists()
    with Log.open(tmp_path, clock=ManualClock()) as log:
        partition = log.partition("disk", 0)
        assert partition.log_end_offset == 36
        assert len(partition.segments) == segments
        again = read_batches(partition)
        assert again == first
        for i, (got, data) in enumerate(zip(again, sent, strict=True)):
            assert_stored_verbatim(got, data, 3 * i)
        for offset in range(36):
            head = DefaultRecordBatch(split_wire(partition.read(offset, max_bytes=1).records)[0])
            assert head.base_offset == offset - offset % 3
        assert partition.append(build_batch(1)).base_offset == 36


# -- truncation ---------------------------------------------------------------------------


def test_truncate_to_drops_batches_and_producer_history(
    make_partition: PartitionFactory,
) -> None:
    partition = make_partition({"segment.bytes": 300})
    for sequence in range(6):
        partition.append(idempotent_batch(2, sequence=2 * sequence, prefix=f"{sequence}-"))
    assert len(partition.segments) > 2
    partition.truncate_to(4)
    assert partition.log_end_offset == 4
    assert partition.durable_offset <= 4
    assert [r.offset for r in read_all(partition)] == [0, 1, 2, 3]
    with pytest.raises(OffsetOutOfRangeError):
        partition.read(5)
    # The producer's batches after the cut are forgotten: its sequence 4 is next again.
    assert partition.append(idempotent_batch(2, sequence=4, prefix="again-")).base_offset == 4
    assert partition.append(idempotent_batch(2, sequence=2, prefix="1-")).duplicate
    assert [r.value for r in read_all(partition)][-2:] == [b"again-value-0", b"again-value-1"]


def test_concurrent_readers_see_whole_batches(make_partition: PartitionFactory) -> None:
    partition = make_partition({"segment.bytes": 1000, "index.interval.bytes": 200})
    partition.append(build_batch(1))
    stop = threading.Event()
    started = threading.Barrier(3)
    failures: list[BaseException] = []
    reads = [0, 0]

    def reader(slot: int, rng: random.Random) -> None:
        try:
            started.wait()
            while not stop.is_set() or reads[slot] == 0:
                end = partition.log_end_offset
                offset = rng.randrange(end)
                data = partition.read(offset, max_bytes=rng.choice([1, 500, 5000])).records
                batches = split_wire(data)
                first = DefaultRecordBatch(batches[0])
                assert first.base_offset <= offset <= first.base_offset + first.last_offset_delta
                expected = first.base_offset
                for batch in batches:
                    decoded = DefaultRecordBatch(batch)
                    assert decoded.validate_crc()
                    assert decoded.base_offset == expected
                    expected += decoded.last_offset_delta + 1
                reads[slot] += 1
        except BaseException as error:  # re-raised in the main thread below
            failures.append(error)

    threads = [
        threading.Thread(target=reader, args=(slot, random.Random(slot))) for slot in range(2)
    ]
    for thread in threads:
        thread.start()
    started.wait()
    try:
        for i in range(300):
            partition.append(build_batch(records(1 + i % 4, prefix=f"{i}-")))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures
    assert all(count > 0 for count in reads)
    assert len(partition.segments) > 10
