"""Log compaction: keep the last record of each key in the closed segments.

Compaction is the one place the log decodes records (it must read keys). It rewrites
closed segments, never the active one, and keeps:

- every record that is the latest for its key anywhere in the log, and keyless records;
- offsets: a rewritten batch keeps its ``baseOffset`` and ``lastOffsetDelta``, and its
  records keep their offset deltas, so readers see gaps, never renumbering;
- tombstones (null values) until ``delete.retention.ms`` after the cleaner first saw them;
- control batches, and an empty batch in place of a producer's last batch when all its
  records went, so the producer's last sequence number survives (as Kafka does).

Transactions: only closed segments wholly below the last stable offset are cleaned (an open
transaction's outcome is unknown), and only records below it and outside aborted
transactions count as a key's latest, so a record a read_committed reader cannot see never
removes one it can. Records of aborted transactions are removed. Transaction markers are
kept, always (Kafka drops them after ``delete.retention.ms``; keeping them is the safe
side), so the aborted index and a read_committed reader see the same history as before.

Consecutive cleaned segments are merged while they fit in ``segment.bytes``. The swap is
crash-safe: the new file is written as ``<base>.log.cleaned`` and fsynced, renamed to
``<base>.log.swap`` (the commit point), then the old files go and the swap file takes the
first one's name. Opening a partition finishes a ``.swap`` and discards a ``.cleaned``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from crc32c import crc32c

from .batch import (
    ATTRIBUTE_LOG_APPEND_TIME,
    BatchHeader,
    build_empty_batch,
)
from .fs import Filesystem, read_json_object, write_json
from .partition import PartitionLog
from .segment import ScanStop, Segment, segment_name

__all__ = ["CompactionResult", "compact", "compact_if_dirty", "finish_swap"]

_CLEANER_STATE = "cleaner.json"
_BUILDER_BATCH_BYTES_MAX = 1 << 31


@dataclass(frozen=True, slots=True)
class CompactionResult:
    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    records_removed: int


def compact_if_dirty(partition: PartitionLog) -> CompactionResult | None:
    """Compact when the share of never-cleaned closed bytes reaches
    ``min.cleanable.dirty.ratio``."""
    with partition.lock:
        closed = _cleanable(partition)
        if not closed or partition.failure is not None:
            return None
        state = _read_state(partition)
        clean_through = state.get("clean_through", 0)
        total = sum(segment.size for segment in closed)
        dirty = sum(segment.size for segment in closed if segment.base_offset >= clean_through)
        if total == 0 or dirty == 0 or dirty / total < partition.config.min_cleanable_dirty_ratio:
            return None
        return compact(partition)


def compact(partition: PartitionLog) -> CompactionResult:
    """Compact ``partition``'s closed segments now."""
    with partition.lock:
        partition.check_writable()
        closed = _cleanable(partition)
        bytes_before = sum(segment.size for segment in closed)
        if not closed:
            return CompactionResult(0, 0, 0, 0, 0)
        clean_through = partition.segments[len(closed)].base_offset
        stable_offset = partition.last_stable_offset
        aborted = _aborted_by_producer(partition, stable_offset)
        latest = _latest_offsets(partition, stable_offset, aborted)
        state = _read_state(partition)
        first_seen: dict[str, int] = state.get("first_seen_ms", {})
        now_ms = partition.clock.time_ms()
        keep_batches_of = set(partition.producer_state.last_offsets().values())
        removed = 0
        new_segments: list[Segment] = []
        new_first_seen: dict[str, int] = {}
        for group in _groups(closed, partition.config.segment_bytes):
            if group[0].corrupt_from is not None:
                # Damaged bytes stay as they are, reported on read; rewriting the segment
                # would silently drop the damage and the intact batches after it.
                new_segments.append(group[0])
                continue
            # The latest first-cleaning time of the group: a never-cleaned segment merged
            # into a cleaned one must not lose its tombstones before delete.retention.ms.
            seen_ms = max(first_seen.get(str(s.base_offset), now_ms) for s in group)
            tombstones_expire = seen_ms + partition.config.delete_retention_ms <= now_ms
            parts: list[bytes] = []
            for segment in group:
                for position, header in _batches(partition, segment):
                    data = segment.file.pread(header.size, position)
                    producer_last_batch = header.base_offset in keep_batches_of
                    kept, dropped = _clean_batch(
                        data, header, latest, tombstones_expire, producer_last_batch,
                        aborted=_is_aborted(header, aborted),
                    )  # fmt: skip
                    removed += dropped
                    if kept:
                        parts.append(kept)
            try:
                cleaned = _swap(partition, group, parts)
            except OSError as error:
                # Past the swap's commit point the files on disk and the open segments
                # disagree: reopening finishes or drops the swap, so go offline until then.
                raise partition.go_offline("compaction failed", error) from error
            start = partition.segments.index(group[0])
            partition.segments[start : start + len(group)] = [cleaned]
            new_segments.append(cleaned)
            new_first_seen[str(group[0].base_offset)] = seen_ms
        state = {"clean_through": clean_through, "first_seen_ms": new_first_seen}
        _write_state(partition, state)
        return CompactionResult(
            len(closed),
            len(new_segments),
            bytes_before,
            sum(segment.size for segment in new_segments),
            removed,
        )


def _cleanable(partition: PartitionLog) -> list[Segment]:
    """The closed segments wholly below the last stable offset, oldest first."""
    stable_offset = partition.last_stable_offset
    cleanable = []
    for segment in partition.segments[:-1]:
        if segment.next_offset > stable_offset:
            break
        cleanable.append(segment)
    return cleanable


def _aborted_by_producer(partition: PartitionLog, end: int) -> dict[int, list[tuple[int, int]]]:
    """Each producer's aborted ranges ``(first, last)`` that begin below ``end``."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for entry in partition.aborted_ranges(partition.log_start_offset, end):
        ranges.setdefault(entry.producer_id, []).append((entry.first_offset, entry.last_offset))
    return ranges


def _is_aborted(header: BatchHeader, aborted: dict[int, list[tuple[int, int]]]) -> bool:
    """Whether a data batch belongs to an aborted transaction."""
    if not header.is_transactional or header.is_control:
        return False
    ranges = aborted.get(header.producer_id, ())
    return any(first <= header.base_offset <= last for first, last in ranges)


def _latest_offsets(
    partition: PartitionLog, stable_offset: int, aborted: dict[int, list[tuple[int, int]]]
) -> dict[bytes, int]:
    """Each key's latest offset among the records a read_committed reader sees: below
    ``stable_offset`` and outside aborted transactions."""
    latest: dict[bytes, int] = {}
    for segment in partition.segments:
        if segment.base_offset >= stable_offset:
            break
        for position, header in _batches(partition, segment):
            if header.base_offset >= stable_offset:
                break
            if header.is_control or header.records_count == 0 or _is_aborted(header, aborted):
                continue
            for record in _decoded(segment.file.pread(header.size, position)) or ():
                if record.key is not None:
                    latest[record.key] = record.offset
    return latest


def _decoded(data: bytes) -> list[Any] | None:
    """The batch's records, or None when they cannot be decoded.

    Append checks framing and CRC only, so a client can store a batch whose records are
    malformed or whose codec bits lie; compaction keeps such a batch verbatim (its keys
    unknown, so nothing is dropped for them) instead of failing on every run.
    """
    try:
        batch = DefaultRecordBatch(data)
        records = list(batch)
    except Exception:  # each codec raises its own types: aiokafka's, gzip's, cramjam's
        return None
    last_offset = batch.base_offset + batch.last_offset_delta
    if any(not batch.base_offset <= record.offset <= last_offset for record in records):
        return None  # records that disagree with their header: treat as undecodable
    return records


def _batches(partition: PartitionLog, segment: Segment) -> list[tuple[int, BatchHeader]]:
    batches = []
    for item in segment.scan(0, check_crc=True, end=segment.readable_end):
        if isinstance(item, ScanStop):
            raise partition.corruption_error(
                segment, item.position, segment.base_offset, item.reason
            )
        batches.append(item)
    return batches


def _groups(segments: list[Segment], segment_bytes: int) -> list[list[Segment]]:
    groups: list[list[Segment]] = []
    size = 0
    for segment in segments:
        if groups and segment.corrupt_from is None and groups[-1][-1].corrupt_from is None and (
            size + segment.size <= segment_bytes
        ):
            groups[-1].append(segment)
            size += segment.size
        else:
            groups.append([segment])
            size = segment.size
    return groups


def _clean_batch(
    data: bytes,
    header: BatchHeader,
    latest: dict[bytes, int],
    tombstones_expire: bool,
    producer_last_batch: bool,
    *,
    aborted: bool = False,
) -> tuple[bytes | None, int]:
    """The batch with superseded records (all of them if ``aborted``) removed, and how
    many were removed."""
    if header.is_control or header.records_count == 0:
        return data, 0
    if aborted:
        return (build_empty_batch(header) if producer_last_batch else None), header.records_count
    records = _decoded(data)
    if records is None:
        return data, 0
    kept = [
        record
        for record in records
        if record.key is None
        or (
            latest.get(record.key) == record.offset
            and not (record.value is None and tombstones_expire)
        )
    ]
    dropped = len(records) - len(kept)
    if dropped == 0:
        return data, 0
    if not kept:
        return (build_empty_batch(header) if producer_last_batch else None), dropped
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=header.attributes & 0x07,
        is_transactional=int(header.is_transactional),
        producer_id=header.producer_id,
        producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence,
        batch_size=_BUILDER_BATCH_BYTES_MAX,
    )
    for record in kept:
        builder.append(
            record.offset - header.base_offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=record.headers,
        )
    return _restore_header(builder.build(), header), dropped


def _restore_header(batch: bytearray, original: BatchHeader) -> bytes:
    """Give a rebuilt batch the original's offsets, epoch and timestamp type."""
    struct.pack_into(">qi", batch, 0, original.base_offset, len(batch) - 12)
    struct.pack_into(">i", batch, 12, original.leader_epoch)
    struct.pack_into(">i", batch, 23, original.last_offset_delta)
    if original.attributes & ATTRIBUTE_LOG_APPEND_TIME:
        attributes = struct.unpack_from(">h", batch, 21)[0] | ATTRIBUTE_LOG_APPEND_TIME
        struct.pack_into(">h", batch, 21, attributes)
        struct.pack_into(">q", batch, 35, original.max_timestamp)
    struct.pack_into(">I", batch, 17, crc32c(memoryview(batch)[21:]))
    return bytes(batch)


def _swap(partition: PartitionLog, group: list[Segment], parts: list[bytes]) -> Segment:
    fs, directory = partition.fs, partition.directory
    base = group[0].base_offset
    # The swap's name carries the end of the offsets it replaces, so that a crash after the
    # commit point removes exactly the group's old segments, emptied ones included.
    stem = f"{segment_name(base, '')}-{segment_name(group[-1].next_offset, '')}"
    cleaned = f"{directory}/{stem}.log.cleaned"
    swap = f"{directory}/{stem}.log.swap"
    handle = fs.open(cleaned)
    if parts:
        handle.append(parts)
    handle.fsync()
    handle.close()
    fs.rename(cleaned, swap)  # the commit point
    fs.fsync_dir(directory)
    for segment in group:
        segment.close()
    finish_swap(fs, directory, f"{stem}.log.swap", [s.base_offset for s in group])
    segment = Segment(fs, directory, base, partition.config.index_interval_bytes)
    segment.recover(0, check_crc=True)
    segment.next_offset = max(segment.next_offset, group[-1].next_offset)
    segment.write_index_files()
    return segment


def finish_swap(fs: Filesystem, directory: str, name: str, bases: list[int] | None = None) -> None:
    """Replace the segments a ``.swap`` file covers with it.

    Without ``bases`` (after a crash) the covered segments are those whose base lies
    between the two offsets in the name (``<base>-<end>.log.swap``); a name with the base
    alone covers up to the last offset in the swap file.
    """
    stem = name.split(".")[0]
    base = int(stem.split("-")[0])
    swap_path = f"{directory}/{name}"
    if bases is None and "-" in stem:
        end = int(stem.split("-")[1])
        bases = [
            int(entry[:-4])
            for entry in fs.listdir(directory)
            if entry.endswith(".log") and base <= int(entry[:-4]) < end
        ]
    if bases is None:
        last_offset = base
        probe = Segment(fs, directory, base, 1, path=swap_path)
        for item in probe.scan(0, check_crc=False):
            if isinstance(item, ScanStop):
                break
            last_offset = item[1].last_offset
        probe.close()
        bases = [
            int(entry[:-4])
            for entry in fs.listdir(directory)
            if entry.endswith(".log") and base <= int(entry[:-4]) <= last_offset
        ]
    for old in bases:
        for suffix in (".log", ".index", ".timeindex"):
            path = f"{directory}/{segment_name(old, suffix)}"
            if fs.exists(path):
                fs.remove(path)
    fs.rename(swap_path, f"{directory}/{segment_name(base, '.log')}")
    fs.fsync_dir(directory)


def _read_state(partition: PartitionLog) -> dict:  # type: ignore[type-arg]
    return read_json_object(partition.fs, f"{partition.directory}/{_CLEANER_STATE}") or {}


def _write_state(partition: PartitionLog, state: dict) -> None:  # type: ignore[type-arg]
    write_json(partition.fs, f"{partition.directory}/{_CLEANER_STATE}", state)
