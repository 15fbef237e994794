"""Opening a partition: loading its segments and recovering what a crash left.

``partition.json`` holds the recovery point (everything below it was fsynced), the log
start offset, the leader epoch and a clean-shutdown flag. Segments wholly below the
recovery point are trusted: their index files are loaded (or rebuilt from headers) and
damage found in them is kept and reported on read, never truncated away, since that data
was acknowledged. The segment holding the recovery point and those after it are checked
batch by batch, CRC included, and cut at the first bad batch. Producer state is loaded
from the newest snapshot and rolled forward from the batch headers after it.

Transactions are part of the producer state: the snapshot holds the open transactions and
the aborted-transaction index as of its offset, and rolling forward replays the
transactional batches (which open transactions) and the markers after it (which close
them; an ABORT adds its range to the index), reading the one record of each marker for its
type. So the last stable offset and the aborted index after a restart or a crash are those
of the batches that survived it. There is no separate ``.txnindex`` file.

:class:`PartitionRecovery` holds these steps for :class:`~streamer.log.partition.PartitionLog`,
which inherits them; it is not used on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .batch import CONTROL_ABORT, CONTROL_COMMIT, BatchHeader, control_type
from .clock import Clock
from .config import TopicConfig
from .fs import Filesystem, read_json_object
from .producer_state import ProducerStateTable
from .segment import ScanStop, Segment, segment_name

__all__ = ["CHECKPOINT_FILE", "PartitionRecovery"]

CHECKPOINT_FILE = "partition.json"


class PartitionRecovery:
    # The partition's state these steps read and set (PartitionLog.__init__ makes it).
    fs: Filesystem
    clock: Clock
    directory: str
    config: TopicConfig
    segments: list[Segment]
    producer_state: ProducerStateTable
    log_start_offset: int
    recovery_point: int
    leader_epoch: int
    recovery_notes: list[str]
    _durable_offset: int

    if TYPE_CHECKING:  # provided by PartitionLog

        @property
        def name(self) -> str: ...

        @property
        def active(self) -> Segment: ...

        @property
        def log_end_offset(self) -> int: ...

        def _new_segment(self, base_offset: int) -> Segment: ...

        def _write_checkpoint(self, *, clean_shutdown: bool) -> None: ...

    def _load(self) -> None:
        checkpoint = self._read_checkpoint()
        self.log_start_offset = checkpoint.get("log_start_offset", 0)
        self.recovery_point = checkpoint.get("recovery_point", 0)
        self.leader_epoch = checkpoint.get("leader_epoch", 0)
        clean = checkpoint.get("clean_shutdown") is True
        names = self.fs.listdir(self.directory)
        for name in names:
            if name.endswith((".cleaned", ".tmp")):
                self.fs.remove(f"{self.directory}/{name}")
        for name in names:
            if name.endswith(".swap"):
                self._finish_swap(name)
        bases = sorted(
            int(name[:-4]) for name in self.fs.listdir(self.directory) if name.endswith(".log")
        )
        for position, base in enumerate(bases):
            segment = Segment(self.fs, self.directory, base, self.config.index_interval_bytes)
            segment.created_monotonic_ms = self.clock.monotonic_ms()
            following = bases[position + 1] if position + 1 < len(bases) else None
            self.segments.append(segment)
            if not self._load_segment(segment, clean=clean, following_base=following):
                break  # the log was truncated inside this segment: later ones go
        self._drop_segments_after(len(self.segments))
        if self.segments and self.log_end_offset < self.log_start_offset:
            # A crash lost the tail after a DeleteRecords: offsets below the start are
            # deleted, so start empty at the log start (as Kafka does), never reuse them.
            self.recovery_notes.append(
                f"{self.name}: log end {self.log_end_offset} is before the log start "
                f"{self.log_start_offset}; starting an empty log there"
            )
            self._drop_segments_after(0)
        if not self.segments:
            base = max(self.log_start_offset, self.recovery_point)
            self.segments.append(self._new_segment(base))
        elif self.active.corrupt_from is not None:  # never append after damaged bytes
            self.segments.append(self._new_segment(self.active.next_offset))
        self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
        self._durable_offset = self.log_end_offset if clean else self.recovery_point
        self._durable_offset = min(self._durable_offset, self.log_end_offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        self._load_producer_state()
        self._write_checkpoint(clean_shutdown=False)

    def _load_segment(self, segment: Segment, *, clean: bool, following_base: int | None) -> bool:
        """Load one segment's index, recovering it if it may hold unsynced data.

        A segment wholly before the recovery point is trusted: its index is loaded or
        rebuilt from headers, and damage found there is kept and reported on read, never
        truncated away. Other segments are checked batch by batch with their CRCs and cut
        at the first bad one. Returns False when the segment was cut (its successors are
        then invalid).
        """
        trusted = clean or (following_base is not None and following_base <= self.recovery_point)
        # Where a trusted segment ends: the next one's base, or (a clean shutdown) the
        # recovery point, which close() set to the log end.
        limit = following_base if following_base is not None else self.recovery_point
        if trusted and segment.load_index():
            self._check_overrun(segment, limit)
            return True
        # baseOffset is outside the CRC: in an unsynced tail, a batch that does not follow
        # on from the one before is damage (compacted logs have gaps, so not there).
        stop = segment.recover(
            0, check_crc=not trusted, contiguous=not trusted and not self.config.compact
        )
        if stop is None:
            if trusted:
                self._check_overrun(segment, limit)
            if following_base is not None and segment.corrupt_from is None:
                segment.write_index_files()  # a closed segment's index was rebuilt: save it
            return True
        if trusted or segment.next_offset < self.recovery_point:
            segment.corrupt_from = (stop.position, segment.next_offset)
            self.recovery_notes.append(
                f"{self.name}: {segment.path} is damaged at byte {stop.position} before the "
                f"recovery point ({stop.reason}); reads there will fail"
            )
            if trusted:
                self._check_overrun(segment, limit)
            segment.next_offset = limit if trusted or following_base is not None else max(
                segment.next_offset,
                self.recovery_point,
                self._end_after_damage(segment, stop.position),
            )
            return True
        segment.file.truncate(stop.position)
        self.recovery_notes.append(
            f"{self.name}: truncated {segment.path} at byte {stop.position} "
            f"(offset {segment.next_offset}): {stop.reason}"
        )
        return False

    def _check_overrun(self, segment: Segment, limit: int) -> None:
        """A trusted segment ends by ``limit``. A batch claiming offsets past it has a
        damaged header (baseOffset or lastOffsetDelta): reads fail from that batch on, and
        neither the log end nor the producer state believes its offsets."""
        if segment.next_offset <= limit:
            return
        for item in segment.scan(0, check_crc=False, end=segment.readable_end):
            if isinstance(item, ScanStop):
                break
            position, header = item
            if header.next_offset > limit:
                segment.corrupt_from = (position, min(header.base_offset, limit))
                segment.forget_index_from(position)
                self.recovery_notes.append(
                    f"{self.name}: {segment.path} is damaged at byte {position} before the "
                    f"recovery point (a batch claims offsets past {limit}); reads there will fail"
                )
                break
        segment.next_offset = limit

    @staticmethod
    def _end_after_damage(segment: Segment, position: int) -> int:
        """The end offset of the intact batches that follow the damaged one at
        ``position`` (0 if none), so that the next segment never reuses their offsets:
        batches acknowledged after a clean restart may sit past damage before the
        recovery point."""
        damaged = next(segment.scan(position, check_crc=False), None)
        if damaged is None or isinstance(damaged, ScanStop):
            return 0  # the length itself is damaged: nothing after it can be framed
        end = 0
        for item in segment.scan(position + damaged[1].size, check_crc=True):
            if isinstance(item, ScanStop) or (end and item[1].base_offset != end):
                break
            end = item[1].next_offset
        return end

    def _drop_segments_after(self, count: int) -> None:
        for name in self.fs.listdir(self.directory):
            if name.endswith(".log") and int(name[:-4]) > (
                self.segments[count - 1].base_offset if count else -1
            ):
                base = int(name[:-4])
                if all(segment.base_offset != base for segment in self.segments[:count]):
                    self.recovery_notes.append(
                        f"{self.name}: removed segment {name} after truncation"
                    )
                    doomed = Segment(self.fs, self.directory, base, 1)
                    doomed.delete()
        for segment in self.segments[count:]:
            segment.close()
        del self.segments[count:]

    def _finish_swap(self, name: str) -> None:
        """Complete a compaction swap interrupted by a crash (see compaction.py)."""
        from .compaction import finish_swap

        finish_swap(self.fs, self.directory, name)

    def _read_checkpoint(self) -> dict[str, int]:
        path = f"{self.directory}/{CHECKPOINT_FILE}"
        if not self.fs.exists(path):
            return {}
        data = read_json_object(self.fs, path)
        offsets = ("recovery_point", "log_start_offset", "leader_epoch")
        if data is None or any(
            type(data.get(key, 0)) is not int or data.get(key, 0) < 0 for key in offsets
        ):  # damaged, or well-formed JSON but not a checkpoint: trust none of it
            self.recovery_notes.append(f"{self.name}: invalid {CHECKPOINT_FILE}, recovering all")
            return {}
        return data

    def _load_producer_state(self) -> None:
        snapshots = sorted(
            int(name[:-9]) for name in self.fs.listdir(self.directory) if name.endswith(".snapshot")
        )
        start = self.log_start_offset
        for offset in reversed(snapshots):
            path = f"{self.directory}/{segment_name(offset, '.snapshot')}"
            if offset > self.log_end_offset:
                self.fs.remove(path)
                continue
            try:
                self.producer_state = ProducerStateTable.from_bytes(self.fs.read_file(path))
            except (ValueError, TypeError):
                self.recovery_notes.append(f"{self.name}: ignored damaged snapshot {path}")
                continue
            start = offset
            break
        self._replay_producer_state(start)

    def _replay_producer_state(self, offset: int) -> None:
        """Roll producer state forward over the batches from ``offset``: headers, and the
        record of each transaction marker."""
        now_ms = self.clock.time_ms()
        state = self.producer_state
        for segment, position, header in self._batches_from(offset):
            if header.producer_id < 0:
                continue
            if not header.is_control:
                state.update(header, now_ms)
                continue
            marker = control_type(segment.file.pread(header.size, position))
            if marker in (CONTROL_ABORT, CONTROL_COMMIT):
                state.end_transaction(
                    header.producer_id, header.producer_epoch,
                    commit=marker == CONTROL_COMMIT, offset=header.base_offset, now_ms=now_ms,
                )  # fmt: skip

    def _batches_from(self, offset: int) -> list[tuple[Segment, int, BatchHeader]]:
        """``(segment, position, header)`` of each readable batch ending at or after
        ``offset``."""
        batches = []
        for segment in self.segments:
            if segment.next_offset <= offset:
                continue
            scan = segment.scan(
                segment.floor_position(offset), check_crc=False, end=segment.readable_end
            )
            for item in scan:
                if isinstance(item, ScanStop):
                    break
                if item[1].last_offset >= offset:
                    batches.append((segment, *item))
        return batches
