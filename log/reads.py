"""Reading a partition: whole batches by offset, and offsets by timestamp.

Every batch handed out has its CRC-32C checked on the way; damaged bytes raise
:class:`~streamer.log.errors.CorruptLogError` naming the file, topic, partition and
offset, and are never served. :class:`PartitionReads` holds these steps for
:class:`~streamer.log.partition.PartitionLog`, which inherits them.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka.record.default_records import DefaultRecordBatch

from .batch import BATCH_OVERHEAD_BYTES, HEADER_BYTES, BatchHeader, crc_matches, parse_header
from .errors import CorruptLogError, OffsetOutOfRangeError
from .segment import ScanStop, Segment

__all__ = ["PartitionReads", "ReadResult"]


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: bytes  # whole batches, possibly starting before the requested offset
    high_watermark: int
    log_start_offset: int
    log_end_offset: int



class PartitionReads:
    # The partition's state these steps read (PartitionLog.__init__ makes it).
    lock: threading.RLock
    topic: str
    partition: int
    segments: list[Segment]
    log_start_offset: int

    if TYPE_CHECKING:  # provided by PartitionLog

        @property
        def name(self) -> str: ...

        @property
        def log_end_offset(self) -> int: ...

        @property
        def high_watermark(self) -> int: ...

        def _check_open(self) -> None: ...

    def read(self, offset: int, max_bytes: int = 1 << 20) -> ReadResult:
        """Whole batches from the one holding ``offset``, up to ``max_bytes``.

        At least one batch is returned when any exists at ``offset``, even if it is larger
        than ``max_bytes`` (as Kafka does), so a consumer always makes progress.
        """
        records, high_watermark, start, end = self.read_view(offset, max_bytes)
        return ReadResult(bytes(records) if isinstance(records, memoryview) else records,
                          high_watermark, start, end)

    def read_view(
        self, offset: int, max_bytes: int = 1 << 20
    ) -> tuple[bytes | memoryview, int, int, int]:
        """:meth:`read` without copying the batches out of the buffer they were read into:
        ``(records, high_watermark, log_start_offset, log_end_offset)``. For the server,
        which hands the records straight to the socket."""
        with self.lock:
            self._check_open()
            if not self.log_start_offset <= offset <= self.log_end_offset:
                raise OffsetOutOfRangeError(
                    f"{self.name}: offset {offset} is outside "
                    f"[{self.log_start_offset}, {self.log_end_offset}]"
                )
            records: bytes | memoryview = b""
            for segment in self.segments[self._segment_index(offset) :]:
                if segment.next_offset > offset:
                    records = self._read_segment(segment, offset, max_bytes)
                    if records:  # compaction may leave no batch at or after ``offset`` here
                        break
            return records, self.high_watermark, self.log_start_offset, self.log_end_offset

    def _segment_index(self, offset: int) -> int:
        bases = [segment.base_offset for segment in self.segments]
        return max(bisect.bisect_right(bases, offset) - 1, 0)

    def _read_segment(
        self, segment: Segment, offset: int, max_bytes: int
    ) -> bytes | memoryview:
        end = segment.readable_end
        position = segment.floor_position(offset)
        while True:  # find the batch that holds ``offset``: headers only
            if end - position < HEADER_BYTES:
                if segment.corrupt_from is not None:
                    raise self.corruption_error(segment, end, offset, "damaged batch header")
                return b""
            header = parse_header(segment.file.pread(HEADER_BYTES, position))
            self._check_structure(segment, header, position, end, offset)
            if header.last_offset >= offset:
                break
            position += header.size
        chunk = segment.file.pread(min(max(max_bytes, header.size), end - position), position)
        cursor = 0
        next_offset = offset
        while len(chunk) - cursor >= HEADER_BYTES:
            header = parse_header(chunk, cursor)
            try:
                self._check_structure(segment, header, position + cursor, end, offset)
                if cursor + header.size > len(chunk):
                    break
                if not crc_matches(chunk, cursor, header):
                    raise self.corruption_error(
                        segment, position + cursor, header.base_offset, "CRC-32C mismatch"
                    )
            except CorruptLogError:
                if cursor == 0:
                    raise
                break  # hand out the intact batches before it; reading on from it raises
            cursor += header.size
            next_offset = header.next_offset
        segment.remember_read(next_offset, position + cursor)
        return chunk if cursor == len(chunk) else memoryview(chunk)[:cursor]

    def _check_structure(
        self, segment: Segment, header: BatchHeader, position: int, end: int, wanted: int
    ) -> None:
        damaged = header.magic != 2 or header.batch_length < HEADER_BYTES - BATCH_OVERHEAD_BYTES
        # baseOffset is outside the CRC: offsets past the segment's end mean it is damaged
        if damaged or position + header.size > end or header.next_offset > segment.next_offset:
            in_range = segment.base_offset <= header.base_offset < segment.next_offset
            raise self.corruption_error(
                segment, position, header.base_offset if in_range else wanted,
                "damaged batch header",
            )

    def corruption_error(
        self, segment: Segment, position: int, offset: int, reason: str
    ) -> CorruptLogError:
        """The error for damaged bytes at ``position`` in ``segment``."""
        return CorruptLogError(
            f"{reason} at byte {position}",
            path=segment.path,
            topic=self.topic,
            partition=self.partition,
            offset=offset,
        )

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """The first offset whose record timestamp is ≥ ``timestamp_ms``, or None."""
        with self.lock:
            for segment in self.segments:
                if segment.max_timestamp < timestamp_ms:
                    continue
                for item in segment.scan(segment.time_floor(timestamp_ms), check_crc=True):
                    if isinstance(item, ScanStop):
                        break
                    position, header = item
                    if (
                        header.max_timestamp < timestamp_ms
                        or header.records_count == 0
                        or header.last_offset < self.log_start_offset
                    ):
                        continue
                    found = self._first_record_at(
                        segment, position, header, timestamp_ms, self.log_start_offset
                    )
                    if found is not None:
                        return found
            return None

    @staticmethod
    def _first_record_at(
        segment: Segment, position: int, header: BatchHeader, timestamp_ms: int, start: int
    ) -> int | None:
        """The first record at or after offset ``start`` whose timestamp reaches the target;
        records below the log start are deleted, whatever their timestamps."""
        if header.attributes & 0x08:  # LogAppendTime: every record has maxTimestamp
            return max(header.base_offset, start)
        batch_answer = max(header.base_offset, start)
        try:
            for record in DefaultRecordBatch(segment.file.pread(header.size, position)):
                if not header.base_offset <= record.offset <= header.last_offset:
                    return batch_answer  # records that disagree with their header
                if record.offset >= start and record.timestamp >= timestamp_ms:
                    return int(record.offset)
        except Exception:  # records append never decoded are malformed: answer with the
            return batch_answer  # batch, whose maxTimestamp qualifies
        return None
