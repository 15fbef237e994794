"""Building and reading Kafka v2 batches for the storage-engine tests.

Batches are always built with aiokafka's record-batch codec, the same one clients use, so
the log is tested against real Kafka v2 bytes. Malformed batches are made by damaging a
good one (and, where the test needs the damage to get past the CRC check, re-sealing the
CRC), never by writing headers by hand.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from crc32c import crc32c
from streamer.log import MemoryFilesystem, PartitionLog

T0_MS = 1_700_000_000_000  # ManualClock's default start
ROOT = "/data"
_BUILDER_BATCH_BYTES_MAX = 1 << 30

PartitionFactory = Callable[..., PartitionLog]  # the make_partition fixture


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = T0_MS
    headers: tuple[tuple[str, bytes], ...] = field(default=(("h", b"x"),))


@dataclass(frozen=True)
class StoredRecord:
    """A record as read back from the log, with the offset the log gave it."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def records(count: int, *, prefix: str = "", timestamp_ms: int = T0_MS) -> list[Record]:
    return [
        Record(f"{prefix}key-{i}".encode(), f"{prefix}value-{i}".encode(), timestamp_ms + i)
        for i in range(count)
    ]


def build_batch(
    content: int | Sequence[Record] = 1,
    *,
    codec: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    """One v2 batch, built by aiokafka. ``content`` is a record count or the records."""
    items = records(content) if isinstance(content, int) else list(content)
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=int(transactional),
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=_BUILDER_BATCH_BYTES_MAX,
    )
    deltas = offset_deltas if offset_deltas is not None else range(len(items))
    for delta, item in zip(deltas, items, strict=True):
        builder.append(
            delta,
            timestamp=item.timestamp_ms,
            key=item.key,
            value=item.value,
            headers=list(item.headers),
        )
    return bytes(builder.build())


def idempotent_batch(
    count: int, *, producer_id: int = 1000, epoch: int = 0, sequence: int, prefix: str = ""
) -> bytes:
    return build_batch(
        records(count, prefix=prefix),
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )


def reseal_crc(batch: bytearray) -> bytes:
    """Recompute the CRC-32C after a test edited fields it covers."""
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


def patch(batch: bytes, fmt: str, position: int, value: int, *, fix_crc: bool = True) -> bytes:
    copy = bytearray(batch)
    struct.pack_into(fmt, copy, position, value)
    return reseal_crc(copy) if fix_crc else bytes(copy)


def split_wire(data: bytes) -> list[bytes]:
    """Frame concatenated batches by their batchLength field alone."""
    batches = []
    position = 0
    while position < len(data):
        (length,) = struct.unpack_from(">i", data, position + 8)
        batches.append(data[position : position + length + 12])
        position += length + 12
    assert position == len(data), "read returned a partial batch"
    return batches


def decode(data: bytes) -> list[StoredRecord]:
    found = []
    for batch in split_wire(data):
        for record in DefaultRecordBatch(batch):
            found.append(StoredRecord(record.offset, record.key, record.value, record.timestamp))
    return found


def read_batches(partition: PartitionLog, start: int | None = None) -> list[bytes]:
    """Every batch from ``start`` (default: the log start) to the log end."""
    offset = partition.log_start_offset if start is None else start
    batches: list[bytes] = []
    while offset < partition.log_end_offset:
        data = partition.read(offset).records
        if not data:
            break  # only gaps remain up to the log end
        chunk = split_wire(data)
        batches.extend(chunk)
        last = DefaultRecordBatch(chunk[-1])
        offset = last.base_offset + last.last_offset_delta + 1
    return batches


def read_all(partition: PartitionLog, start: int | None = None) -> list[StoredRecord]:
    return decode(b"".join(read_batches(partition, start)))


def partition_files(fs: MemoryFilesystem, partition: PartitionLog) -> dict[str, bytes]:
    """The bytes of every segment file of ``partition``: the log's content on disk."""
    return {
        name: fs.read_file(f"{partition.directory}/{name}")
        for name in fs.listdir(partition.directory)
        if name.endswith(".log")
    }
