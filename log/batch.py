"""Kafka v2 record batches, seen from the log: headers, checks, offset assignment.

The log stores batches exactly as producers send them and never decodes their records.
It reads the 61-byte header, checks the CRC-32C (which covers attributes to the end), and
rewrites only ``baseOffset`` and ``partitionLeaderEpoch``, the two fields before the CRC.

Header layout (big-endian)::

    0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8
    17 crc u32 | 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64
    35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32
    57 recordsCount i32 | 61 records…
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from crc32c import crc32c

from .errors import CorruptRecordError, InvalidRecordError, RecordTooLargeError

__all__ = [
    "BATCH_OVERHEAD_BYTES",
    "HEADER_BYTES",
    "CONTROL_ABORT",
    "CONTROL_COMMIT",
    "BatchHeader",
    "build_control_batch",
    "build_empty_batch",
    "control_type",
    "frame_client_batches",
    "parse_header",
    "split_batches",
]

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_BYTES = HEADER.size  # 61
_unpack_header = HEADER.unpack_from
BATCH_OVERHEAD_BYTES = 12  # baseOffset and batchLength are not counted in batchLength
_MIN_BATCH_LENGTH = HEADER_BYTES - BATCH_OVERHEAD_BYTES
_PREFIX = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_CRC_START = 21

ATTRIBUTE_CODEC_MASK = 0x07
ATTRIBUTE_LOG_APPEND_TIME = 0x08
ATTRIBUTE_TRANSACTIONAL = 0x10
ATTRIBUTE_CONTROL = 0x20
ATTRIBUTE_DELETE_HORIZON = 0x40
_CODEC_MAX = 4  # zstd
_ATTRIBUTES_REFUSED = ATTRIBUTE_CONTROL | ATTRIBUTE_DELETE_HORIZON

# Kafka's ControlRecordType: the int16 after the version in a control record's key.
CONTROL_ABORT = 0
CONTROL_COMMIT = 1
# A transaction marker's one record, sizes fixed: length 16, attributes 0, timestamp and
# offset deltas 0, a 4-byte key (version 0, type), a 6-byte value (version 0, coordinator
# epoch), no headers. Varints are zigzag-encoded: 16 → 0x20, 4 → 0x08, 6 → 0x0c.
_MARKER_RECORD = struct.Struct(">bbbbbhhbhib")


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch takes, header included."""
        return self.batch_length + BATCH_OVERHEAD_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTRIBUTE_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTRIBUTE_CONTROL)

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id >= 0 and self.base_sequence >= 0

    @property
    def last_sequence(self) -> int:
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)


def parse_header(buffer: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    return BatchHeader._make(HEADER.unpack_from(buffer, position))


def crc_matches(buffer: bytes | bytearray | memoryview, position: int, header: BatchHeader) -> bool:
    view = memoryview(buffer)[position + _CRC_START : position + header.size]
    return crc32c(view) == header.crc


def split_batches(records: bytes | bytearray | memoryview) -> list[tuple[int, BatchHeader]]:
    """Frame ``records`` into batches and check each one's framing, magic and CRC.

    Returns ``(position, header)`` pairs. Raises :class:`CorruptRecordError` on anything
    that is not a whole, intact v2 batch; the caller has written nothing yet.
    """
    return [(position, BatchHeader._make(fields)) for position, fields in _frame(records)]


def frame_client_batches(
    records: bytes | bytearray | memoryview, max_message_bytes: int
) -> list[tuple[int, tuple[int, ...]]]:
    """:func:`split_batches` plus :func:`check_client_batch`, for the append path.

    Returns ``(position, fields)`` with the header's fields as a plain tuple, in
    :class:`BatchHeader` order: this runs for every produced batch.
    """
    batches = _frame(records)
    for _, fields in batches:
        attributes = fields[5]
        if (  # anything unusual goes to check_client_batch, which names the problem
            attributes & _ATTRIBUTES_REFUSED
            or attributes & ATTRIBUTE_CODEC_MASK > _CODEC_MAX
            or fields[12] < 1
            or fields[6] != fields[12] - 1
            or (attributes & ATTRIBUTE_TRANSACTIONAL and fields[9] < 0)
            or fields[1] + BATCH_OVERHEAD_BYTES > max_message_bytes
        ):
            check_client_batch(BatchHeader._make(fields), max_message_bytes)
    return batches


def _frame(records: bytes | bytearray | memoryview) -> list[tuple[int, tuple[int, ...]]]:
    total = len(records)
    if total == 0:
        raise CorruptRecordError("empty records: a produce must carry at least one batch")
    view = memoryview(records)
    batches = []
    position = 0
    while position < total:
        if total - position < HEADER_BYTES:
            raise CorruptRecordError(
                f"truncated batch at byte {position}: {total - position} bytes left, "
                f"a v2 batch header needs {HEADER_BYTES}"
            )
        fields = _unpack_header(view, position)
        if fields[3] != 2:
            raise CorruptRecordError(
                f"batch at byte {position} has magic {fields[3]}; only v2 batches "
                "(magic 2) are accepted, so use a client that speaks Kafka 0.11 or later"
            )
        end = position + fields[1] + BATCH_OVERHEAD_BYTES
        if fields[1] < _MIN_BATCH_LENGTH or end > total:
            raise CorruptRecordError(
                f"batch at byte {position} declares batchLength {fields[1]} but "
                f"{total - position - BATCH_OVERHEAD_BYTES} bytes follow"
            )
        if crc32c(view[position + _CRC_START : end]) != fields[4]:
            raise CorruptRecordError(f"batch at byte {position} fails its CRC-32C check")
        batches.append((position, fields))
        position = end
    return batches


def check_client_batch(header: BatchHeader, max_message_bytes: int) -> None:
    """Refuse what a producer may not write; framing and CRC were checked already."""
    if header.attributes & ATTRIBUTE_CONTROL:
        raise InvalidRecordError(
            "control batches are written only by the log's transaction coordinator"
        )
    if header.attributes & ATTRIBUTE_DELETE_HORIZON:
        raise InvalidRecordError("the delete-horizon attribute is set only by the log cleaner")
    if header.attributes & ATTRIBUTE_CODEC_MASK > _CODEC_MAX:
        raise InvalidRecordError(
            f"unknown compression codec {header.attributes & ATTRIBUTE_CODEC_MASK}"
        )
    if header.records_count < 1:
        raise InvalidRecordError(f"batch holds {header.records_count} records; at least 1")
    if header.last_offset_delta != header.records_count - 1:
        raise InvalidRecordError(
            f"lastOffsetDelta {header.last_offset_delta} does not match "
            f"{header.records_count} records"
        )
    if header.is_transactional and header.producer_id < 0:
        raise InvalidRecordError("a transactional batch needs a producer id")
    if header.size > max_message_bytes:
        raise RecordTooLargeError(
            f"batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes}"
        )


def assigned_prefix(base_offset: int, batch_length: int, leader_epoch: int) -> bytes:
    """The 16 bytes that replace a batch's first 16 when the log assigns its offsets."""
    return _PREFIX.pack(base_offset, batch_length, leader_epoch)


def with_log_append_time(batch: bytes | bytearray | memoryview, time_ms: int) -> bytearray:
    """A copy of ``batch`` stamped with LogAppendTime ``time_ms``, CRC recomputed.

    Kafka's rule for ``message.timestamp.type=LogAppendTime``: set the timestamp-type bit
    and maxTimestamp; consumers then use maxTimestamp for every record.
    """
    copy = bytearray(batch)
    attributes = struct.unpack_from(">h", copy, 21)[0] | ATTRIBUTE_LOG_APPEND_TIME
    struct.pack_into(">h", copy, 21, attributes)
    struct.pack_into(">q", copy, 35, time_ms)
    struct.pack_into(">I", copy, 17, crc32c(memoryview(copy)[_CRC_START:]))
    return copy


def build_control_batch(
    producer_id: int,
    producer_epoch: int,
    *,
    commit: bool,
    coordinator_epoch: int,
    timestamp_ms: int,
) -> bytes:
    """A COMMIT or ABORT transaction marker, laid out as Kafka writes it: attributes
    control + transactional, base sequence -1, one record whose key is version 0 and the
    marker type and whose value is version 0 and the coordinator epoch. Base offset 0: the
    log assigns it."""
    record = _MARKER_RECORD.pack(
        0x20, 0, 0, 0, 0x08, 0, CONTROL_COMMIT if commit else CONTROL_ABORT, 0x0C, 0,
        coordinator_epoch, 0,
    )  # fmt: skip
    fields = struct.pack(
        ">hiqqqhii",
        ATTRIBUTE_CONTROL | ATTRIBUTE_TRANSACTIONAL,
        0,  # lastOffsetDelta
        timestamp_ms,
        timestamp_ms,
        producer_id,
        producer_epoch,
        -1,  # baseSequence
        1,  # recordsCount
    )
    body = fields + record
    return struct.pack(">qiibI", 0, len(body) + 9, 0, 2, crc32c(body)) + body


def control_type(batch: bytes | bytearray | memoryview) -> int | None:
    """The type of a control batch's record (:data:`CONTROL_ABORT`,
    :data:`CONTROL_COMMIT`, …), or None if the record cannot be read."""
    view = memoryview(batch)
    try:
        _, position = _read_varint(view, HEADER_BYTES)  # the record's length
        position += 1  # its attributes
        _, position = _read_varint(view, position)  # timestamp delta
        _, position = _read_varint(view, position)  # offset delta
        key_length, position = _read_varint(view, position)
        if key_length < 4:
            return None
        version, kind = struct.unpack_from(">hh", view, position)
    except (IndexError, struct.error):
        return None
    return int(kind) if version == 0 else None


def _read_varint(view: memoryview, position: int) -> tuple[int, int]:
    """A zigzag varint at ``position`` and the position after it."""
    shift = result = 0
    while True:
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), position
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def build_empty_batch(header: BatchHeader) -> bytes:
    """A batch with ``header``'s offsets and producer fields but no records.

    Compaction keeps such a batch when it removed every record of a producer's last
    batch, so the producer's last sequence number survives (Kafka does the same).
    """
    attributes = header.attributes & (ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_LOG_APPEND_TIME)
    body = struct.pack(
        ">hiqqqhii",
        attributes,
        header.last_offset_delta,
        header.base_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        0,
    )
    prefix = struct.pack(
        ">qiibI",
        header.base_offset,
        len(body) + 9,
        header.leader_epoch,
        2,
        crc32c(body),
    )
    return prefix + body
