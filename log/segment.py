"""One segment: a file of record batches, verbatim, and its sparse index.

The index keeps one entry per ``index.interval.bytes`` of batches: the batch's base offset,
its byte position, and the largest timestamp of every batch before it. In memory it is
three ``array('q')`` columns searched by bisection; on disk it is written beside the
segment as ``.index`` (relative offset, position) and ``.timeindex`` (timestamp, relative
offset) when the segment is rolled or the log is closed cleanly. A missing or damaged
index file is rebuilt by scanning the batch headers.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from .batch import (
    BATCH_OVERHEAD_BYTES,
    HEADER_BYTES,
    BatchHeader,
    crc_matches,
    parse_header,
)
from .fs import Buffer, FileHandle, Filesystem

__all__ = ["ScanStop", "Segment", "segment_name"]

_SCAN_CHUNK_BYTES = 1 << 20  # bounded reads while scanning a segment
_INDEX_ENTRY = struct.Struct(">iI")
_TIME_ENTRY = struct.Struct(">qi")
_MIN_BATCH_LENGTH = HEADER_BYTES - BATCH_OVERHEAD_BYTES


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


@dataclass(frozen=True, slots=True)
class ScanStop:
    """Where and why a scan of a segment stopped before its end."""

    position: int
    reason: str


class Segment:
    """A segment file with its in-memory sparse index. Not thread-safe: its partition
    serializes access."""

    def __init__(
        self,
        fs: Filesystem,
        directory: str,
        base_offset: int,
        interval_bytes: int,
        *,
        path: str | None = None,
    ):
        self.fs = fs
        self.directory = directory
        self.base_offset = base_offset
        self.interval_bytes = interval_bytes
        self.path = path or f"{directory}/{segment_name(base_offset, '.log')}"
        self.file: FileHandle = fs.open(self.path)
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.created_monotonic_ms = 0
        self._index_offsets = array("q")
        self._index_positions = array("q")
        self._index_max_ts_before = array("q")
        self._bytes_since_entry = 0
        self._read_hint = (-1, 0)  # (offset, position) where the last read stopped
        # (position, offset) of a damaged batch found before the recovery point: the bytes
        # are kept and reads from there raise CorruptLogError.
        self.corrupt_from: tuple[int, int] | None = None

    # -- size and state -------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.file.size()

    @property
    def readable_end(self) -> int:
        return self.file.size() if self.corrupt_from is None else self.corrupt_from[0]

    @property
    def is_empty(self) -> bool:
        return self.next_offset == self.base_offset

    def index_paths(self) -> tuple[str, str]:
        return (
            f"{self.directory}/{segment_name(self.base_offset, '.index')}",
            f"{self.directory}/{segment_name(self.base_offset, '.timeindex')}",
        )

    # -- appending ------------------------------------------------------------------------

    def append(self, parts: list[Buffer], batches: list[tuple[int, int, int, int]]) -> None:
        """Write whole, offset-assigned batches and index them.

        ``batches`` holds ``(base_offset, size, next_offset, max_timestamp)`` per batch.
        """
        position = self.file.size()
        self.file.append(parts)
        for base_offset, size, next_offset, max_timestamp in batches:
            self._track(position, base_offset, size, next_offset, max_timestamp)
            position += size

    def _track_header(self, header: BatchHeader, position: int) -> None:
        self._track(position, header.base_offset, header.size, header.next_offset,
                    header.max_timestamp)

    def _track(
        self, position: int, base_offset: int, size: int, next_offset: int, max_timestamp: int
    ) -> None:
        if self._bytes_since_entry >= self.interval_bytes or not self._index_offsets:
            self._index_offsets.append(base_offset)
            self._index_positions.append(position)
            self._index_max_ts_before.append(self.max_timestamp)
            self._bytes_since_entry = 0
        self._bytes_since_entry += size
        self.next_offset = next_offset
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp

    # -- scanning, recovery and index loading ----------------------------------------------

    def scan(
        self, start: int = 0, *, check_crc: bool, end: int | None = None
    ) -> Iterator[tuple[int, BatchHeader] | ScanStop]:
        """Yield ``(position, header)`` for each whole batch from ``start``; yield a
        :class:`ScanStop` and end where the bytes stop being a valid batch."""
        end = self.file.size() if end is None else end
        position = start
        while position < end:
            chunk = self.file.pread(min(_SCAN_CHUNK_BYTES, end - position), position)
            offset_in_chunk = 0
            while True:
                if len(chunk) - offset_in_chunk < HEADER_BYTES:
                    if position + offset_in_chunk + HEADER_BYTES > end:
                        yield ScanStop(position + offset_in_chunk, "truncated batch header")
                        return
                    break  # the header straddles the chunk: read on from here
                header = parse_header(chunk, offset_in_chunk)
                here = position + offset_in_chunk
                if header.magic != 2 or header.batch_length < _MIN_BATCH_LENGTH:
                    yield ScanStop(here, f"not a v2 batch (magic {header.magic})")
                    return
                if here + header.size > end:
                    yield ScanStop(here, "truncated batch")
                    return
                if offset_in_chunk + header.size > len(chunk):
                    if offset_in_chunk == 0:  # one batch larger than the chunk
                        chunk = self.file.pread(header.size, here)
                    else:
                        break
                if check_crc and not crc_matches(chunk, offset_in_chunk, header):
                    yield ScanStop(here, "CRC-32C mismatch")
                    return
                yield here, header
                offset_in_chunk += header.size
                if offset_in_chunk >= len(chunk):
                    break
            position += offset_in_chunk

    def recover(
        self, start: int = 0, *, check_crc: bool, contiguous: bool = False
    ) -> ScanStop | None:
        """Rebuild the index by scanning from ``start`` (a batch boundary whose index state
        is already loaded, or 0). Returns where and why the valid batches stop, or None if
        the whole file is valid; the caller decides whether to truncate there.

        ``contiguous`` also stops at a gap in the offsets (only compaction makes gaps)."""
        if start == 0:
            self._reset_index()
        stop: ScanStop | None = None
        for item in self.scan(start, check_crc=check_crc):
            if isinstance(item, ScanStop):
                stop = item
                break
            position, header = item
            if header.base_offset < self.next_offset or (  # compacted logs may have gaps
                contiguous and header.base_offset != self.next_offset
            ):
                stop = ScanStop(position, f"offset {header.base_offset} out of sequence")
                break
            self._track_header(header, position)
        return stop

    def _reset_index(self) -> None:
        self._index_offsets = array("q")
        self._index_positions = array("q")
        self._index_max_ts_before = array("q")
        self._bytes_since_entry = 0
        self.next_offset = self.base_offset
        self.max_timestamp = -1

    def load_index(self) -> bool:
        """Load the index files if they exist and agree with the segment.

        Checks every entry (sizes, monotonic offsets and positions, timestamps) and that
        the last entry points at a batch with that offset, then scans the few batches after
        it. Returns False, leaving nothing loaded, when anything is missing or wrong.
        """
        index_path, time_path = self.index_paths()
        if not (self.fs.exists(index_path) and self.fs.exists(time_path)):
            return False
        raw_index = self.fs.read_file(index_path)
        raw_time = self.fs.read_file(time_path)
        count = len(raw_index) // _INDEX_ENTRY.size
        if (
            count == 0
            or len(raw_index) % _INDEX_ENTRY.size
            or len(raw_time) != count * _TIME_ENTRY.size
        ):
            return False
        offsets, positions, max_ts = array("q"), array("q"), array("q")
        size = self.file.size()
        for i in range(count):
            relative, position = _INDEX_ENTRY.unpack_from(raw_index, i * _INDEX_ENTRY.size)
            timestamp, time_relative = _TIME_ENTRY.unpack_from(raw_time, i * _TIME_ENTRY.size)
            if time_relative != relative or position >= size or relative < 0:
                return False
            if i and (relative <= offsets[-1] - self.base_offset or position <= positions[-1]):
                return False
            if i == 0 and position != 0:
                return False
            offsets.append(self.base_offset + relative)
            positions.append(position)
            max_ts.append(timestamp)
        if any(max_ts[i] > max_ts[i + 1] for i in range(count - 1)):
            return False
        last_position = positions[-1]
        if size - last_position < HEADER_BYTES:
            return False
        if parse_header(self.file.pread(HEADER_BYTES, last_position)).base_offset != offsets[-1]:
            return False
        self._index_offsets, self._index_positions = offsets[:-1], positions[:-1]
        self._index_max_ts_before = max_ts[:-1]
        self.next_offset = offsets[-1]
        self.max_timestamp = max_ts[-1]
        self._bytes_since_entry = self.interval_bytes  # the last entry is re-added by the scan
        # If the bytes after the last entry do not scan, the caller rebuilds the index.
        return self.recover(last_position, check_crc=False) is None

    def write_index_files(self) -> None:
        index_path, time_path = self.index_paths()
        base = self.base_offset
        self.fs.write_file_atomic(
            index_path,
            b"".join(
                _INDEX_ENTRY.pack(offset - base, position)
                for offset, position in zip(self._index_offsets, self._index_positions, strict=True)
            ),
        )
        self.fs.write_file_atomic(
            time_path,
            b"".join(
                _TIME_ENTRY.pack(timestamp, offset - base)
                for timestamp, offset in zip(
                    self._index_max_ts_before, self._index_offsets, strict=True
                )
            ),
        )

    def remove_index_files(self) -> None:
        for path in self.index_paths():
            if self.fs.exists(path):
                self.fs.remove(path)

    # -- reading --------------------------------------------------------------------------

    def floor_position(self, offset: int) -> int:
        """A batch boundary at or before the batch that holds ``offset``."""
        hint_offset, hint_position = self._read_hint
        if hint_offset == offset:
            return hint_position
        i = bisect.bisect_right(self._index_offsets, offset) - 1
        return self._index_positions[i] if i >= 0 else 0

    def time_floor(self, timestamp: int) -> int:
        """A batch boundary before which every batch's max timestamp is < ``timestamp``."""
        i = bisect.bisect_left(self._index_max_ts_before, timestamp) - 1
        return self._index_positions[i] if i >= 0 else 0

    def remember_read(self, next_offset: int, position: int) -> None:
        self._read_hint = (next_offset, position)

    def forget_index_from(self, position: int) -> None:
        """Drop the index entries at or after ``position`` (damaged bytes start there)."""
        keep = bisect.bisect_left(self._index_positions, position)
        del self._index_offsets[keep:]
        del self._index_positions[keep:]
        del self._index_max_ts_before[keep:]
        self._read_hint = (-1, 0)

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at or after ``offset`` (which must be a batch boundary)."""
        cut = None
        for item in self.scan(self.floor_position(offset), check_crc=False):
            if isinstance(item, ScanStop):
                break
            position, header = item
            if header.base_offset >= offset:
                cut = position
                break
        if cut is not None:
            self.file.truncate(cut)
            self._read_hint = (-1, 0)
            self.recover(0, check_crc=False)

    def close(self) -> None:
        self.file.close()

    def delete(self) -> None:
        self.file.close()
        self.fs.remove(self.path)
        self.remove_index_files()
