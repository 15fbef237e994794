"""streamer.log.batch: header parsing, framing checks and the two batch rewrites."""

from __future__ import annotations

import struct

import pytest
from aiokafka.record.default_records import DefaultRecordBatch
from streamer.log import CorruptRecordError, InvalidRecordError, RecordTooLargeError
from streamer.log.batch import (
    HEADER_BYTES,
    build_empty_batch,
    check_client_batch,
    parse_header,
    split_batches,
    with_log_append_time,
)

from .batches import T0_MS, Record, build_batch, patch, records


def test_header_fields_match_aiokafka() -> None:
    batch = build_batch(records(3), producer_id=42, producer_epoch=7, base_sequence=100, codec=1)
    header = parse_header(batch)
    decoded = DefaultRecordBatch(batch)
    assert HEADER_BYTES == 61
    assert header.size == len(batch)
    assert header.magic == 2
    assert header.crc == decoded.crc
    assert header.attributes == decoded.attributes
    assert header.attributes & 0x07 == 1
    assert header.last_offset_delta == 2
    assert header.base_timestamp == T0_MS
    assert header.max_timestamp == T0_MS + 2 == decoded.max_timestamp
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (42, 7, 100)
    assert header.records_count == 3
    assert header.is_idempotent
    assert not header.is_transactional
    assert not header.is_control
    assert header.last_sequence == 102


def test_header_offsets_after_assignment() -> None:
    header = parse_header(build_batch(4))._replace(base_offset=10)
    assert header.last_offset == 13
    assert header.next_offset == 14


def test_last_sequence_wraps_at_int32() -> None:
    header = parse_header(
        build_batch(3, producer_id=1, producer_epoch=0, base_sequence=(1 << 31) - 2)
    )
    assert header.last_sequence == 0


def test_non_idempotent_batch() -> None:
    header = parse_header(build_batch(1))
    assert header.producer_id == -1
    assert not header.is_idempotent


def test_split_batches_frames_concatenated_batches() -> None:
    first, second, third = build_batch(1), build_batch(5), build_batch(2, codec=4)
    found = split_batches(first + second + third)
    assert [position for position, _ in found] == [0, len(first), len(first) + len(second)]
    assert [header.records_count for _, header in found] == [1, 5, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (build_batch(2)[: HEADER_BYTES - 1], "truncated"),
        (build_batch(2)[:-1], "batchLength"),
        (build_batch(2) + build_batch(1)[:30], "truncated"),
        (patch(build_batch(2), ">b", 16, 1, fix_crc=False), "magic 1"),
        (patch(build_batch(2), ">i", 8, -5, fix_crc=False), "batchLength -5"),
        (patch(build_batch(2), ">i", 8, 48, fix_crc=False), "batchLength 48"),
        (patch(build_batch(2), ">i", 8, 1 << 30, fix_crc=False), "batchLength"),
        (patch(build_batch(2), ">I", 17, 0, fix_crc=False), "CRC"),
    ],
)
def test_split_batches_refuses_damage(data: bytes, message: str) -> None:
    with pytest.raises(CorruptRecordError, match=message):
        split_batches(data)


def test_crc_covers_the_records() -> None:
    batch = bytearray(build_batch(2))
    batch[-1] ^= 0x01
    with pytest.raises(CorruptRecordError, match="CRC"):
        split_batches(bytes(batch))


def test_crc_does_not_cover_offset_and_epoch() -> None:
    batch = patch(build_batch(2), ">q", 0, 999, fix_crc=False)
    batch = patch(batch, ">i", 12, 31, fix_crc=False)
    [(_, header)] = split_batches(batch)
    assert (header.base_offset, header.leader_epoch) == (999, 31)


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (patch(build_batch(1), ">h", 21, 0x20), InvalidRecordError, "control"),
        (patch(build_batch(1), ">h", 21, 0x40), InvalidRecordError, "delete-horizon"),
        (patch(build_batch(1), ">h", 21, 0x05), InvalidRecordError, "codec 5"),
        (patch(build_batch(1), ">h", 21, 0x07), InvalidRecordError, "codec 7"),
        (patch(build_batch(2), ">i", 57, 0), InvalidRecordError, "0 records"),
        (patch(build_batch(2), ">i", 23, 5), InvalidRecordError, "lastOffsetDelta 5"),
        (build_batch(1, transactional=True), InvalidRecordError, "producer id"),
        (build_batch(200), RecordTooLargeError, "max.message.bytes=1000"),
    ],
)
def test_check_client_batch(batch: bytes, error: type[Exception], message: str) -> None:
    [(_, header)] = split_batches(batch)
    with pytest.raises(error, match=message):
        check_client_batch(header, max_message_bytes=1000)


def test_check_client_batch_accepts_a_good_batch() -> None:
    [(_, header)] = split_batches(build_batch(3, codec=2))
    check_client_batch(header, max_message_bytes=header.size)  # exactly at the limit


def test_record_too_large_is_an_invalid_record() -> None:
    assert issubclass(RecordTooLargeError, InvalidRecordError)
    assert issubclass(CorruptRecordError, InvalidRecordError)


def test_with_log_append_time_stamps_and_reseals() -> None:
    batch = build_batch(records(3), codec=3)
    stamped = bytes(with_log_append_time(batch, T0_MS + 5000))
    decoded = DefaultRecordBatch(stamped)
    assert decoded.validate_crc()
    assert decoded.timestamp_type == 1
    assert decoded.max_timestamp == T0_MS + 5000
    stored = list(decoded)  # a DefaultRecordBatch iterates once
    assert [r.timestamp for r in stored] == [T0_MS + 5000] * 3
    assert [r.key for r in stored] == [b"key-0", b"key-1", b"key-2"]
    assert stamped[:21] != batch[:21]  # only the CRC moved before the attributes
    assert stamped[:17] == batch[:17]
    assert stamped[HEADER_BYTES:] == batch[HEADER_BYTES:]


def test_build_empty_batch_keeps_offsets_and_producer_fields() -> None:
    source = build_batch(
        [Record(b"a", b"1", T0_MS), Record(b"b", b"2", T0_MS + 9)],
        producer_id=7,
        producer_epoch=3,
        base_sequence=40,
        transactional=True,
    )
    header = split_batches(source)[0][1]._replace(base_offset=500, leader_epoch=2)
    empty = build_empty_batch(header)
    decoded = DefaultRecordBatch(empty)
    assert decoded.validate_crc()
    assert list(decoded) == []
    assert decoded.base_offset == 500
    assert decoded.last_offset_delta == 1
    assert decoded.next_offset == 502
    assert (decoded.producer_id, decoded.producer_epoch, decoded.base_sequence) == (7, 3, 40)
    assert decoded.is_transactional
    assert decoded.max_timestamp == T0_MS + 9
    [(_, parsed)] = split_batches(empty)
    assert parsed.records_count == 0
    assert parsed.leader_epoch == 2
    assert parsed.last_sequence == header.last_sequence == 41
    assert struct.unpack_from(">i", empty, 8)[0] == len(empty) - 12
