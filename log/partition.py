"""One partition of a topic: a sequence of segments, the single owner of its writes.

Every mutation goes through one :class:`PartitionLog` under its lock; fsync runs outside
the lock so appends from other threads continue meanwhile, and concurrent appenders that
wait for durability share one fsync (group commit).

Transactions (the partition's half of Kafka's): a transactional batch opens its producer's
transaction here; :meth:`PartitionLog.write_marker` appends the COMMIT or ABORT control
batch that closes it. :attr:`PartitionLog.last_stable_offset` is the first offset of the
oldest open transaction (else the high watermark), and
:meth:`PartitionLog.aborted_transactions` lists the aborted ranges a read_committed reader
must skip. Both live in the producer state (see :mod:`.producer_state`), which is saved in
every snapshot and rebuilt after a crash from the newest snapshot plus the batches after
it, so they survive restarts and crashes; truncation reloads them the same way.

Files in the partition's directory::

    00000000000000000000.log        record batches, verbatim
    00000000000000000000.index      sparse offset index   (written at roll and clean close)
    00000000000000000000.timeindex  sparse time index     (written at roll and clean close)
    00000000000000004096.snapshot   producer state (and transactions) as of offset 4096
    partition.json                  recovery point, log start offset, leader epoch, clean flag
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

from .batch import (
    BATCH_OVERHEAD_BYTES,
    BatchHeader,
    assigned_prefix,
    build_control_batch,
    frame_client_batches,
    parse_header,
    with_log_append_time,
)
from .clock import Clock
from .config import TopicConfig
from .errors import (
    InvalidRecordError,
    LogError,
    LogStorageError,
    OffsetOutOfRangeError,
)
from .fs import Buffer, Filesystem, write_json
from .producer_state import AbortedTransaction, ProducerStateTable
from .reads import PartitionReads, ReadResult
from .recovery import CHECKPOINT_FILE, PartitionRecovery
from .segment import Segment, segment_name

__all__ = [
    "AbortedTransaction",
    "AppendResult",
    "PartitionLog",
    "PartitionStatistics",
    "ReadResult",
]

_SNAPSHOTS_KEPT = 2
# Kafka's producer.id.expiration.ms: an idempotent producer silent this long is forgotten,
# and may then start again at any sequence.
PRODUCER_ID_EXPIRATION_MS = 24 * 3600 * 1000


class AppendResult(NamedTuple):  # a tuple: one is made per append, on the hot path
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless the topic uses LogAppendTime
    log_start_offset: int
    duplicate: bool = False  # a retried idempotent batch: nothing was written


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    durable_offset: int
    segments: int
    size_bytes: int
    producers: int


class PartitionLog(PartitionRecovery, PartitionReads):
    """The log of one partition. Open it with :meth:`open`."""

    def __init__(
        self,
        fs: Filesystem,
        clock: Clock,
        directory: str,
        topic: str,
        partition: int,
        config: TopicConfig,
    ) -> None:
        self.fs = fs
        self.clock = clock
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = config
        self.leader_epoch = 0
        self.segments: list[Segment] = []
        self.producer_state = ProducerStateTable()
        self.log_start_offset = 0
        self.recovery_point = 0
        self._durable_offset = 0
        self._last_flush_ms = clock.monotonic_ms()
        self.lock = threading.RLock()  # held by every mutation, and by compaction
        self._flush_lock = threading.Lock()
        self._closed = False
        # Set when an fsync fails: the kernel may have dropped the unsynced pages, so the
        # partition takes no more writes until it is reopened and recovered (fsyncgate).
        self.failure: LogStorageError | None = None
        self.recovery_notes: list[str] = []  # what opening repaired, for logs and tests

    @property
    def name(self) -> str:
        return f"{self.topic}/{self.partition}"

    # -- opening (recovery.py does the work) ------------------------------------------

    @classmethod
    def open(
        cls,
        fs: Filesystem,
        clock: Clock,
        directory: str,
        topic: str,
        partition: int,
        config: TopicConfig,
    ) -> PartitionLog:
        log = cls(fs, clock, directory, topic, partition, config)
        fs.makedirs(directory)
        log._load()
        return log

    def _write_checkpoint(self, *, clean_shutdown: bool) -> None:
        data = {
            "recovery_point": self.recovery_point,
            "log_start_offset": self.log_start_offset,
            "leader_epoch": self.leader_epoch,
            "clean_shutdown": clean_shutdown,
        }
        write_json(self.fs, f"{self.directory}/{CHECKPOINT_FILE}", data)

    # -- offsets --------------------------------------------------------------------------

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def high_watermark(self) -> int:
        # One replica: everything appended is committed. Replication will lower this to
        # the offset every in-sync replica holds.
        return self.log_end_offset

    @property
    def durable_offset(self) -> int:
        """Offsets below this are fsynced."""
        return self._durable_offset

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the oldest open transaction, else the high watermark: what
        a read_committed reader may read up to. Never below the log start nor above the
        high watermark."""
        if not self.producer_state.ongoing:
            return self.high_watermark
        with self.lock:  # the dict may change under another thread's append
            ongoing = self.producer_state.ongoing
            first = min(ongoing.values()) if ongoing else self.high_watermark
            return min(max(first, self.log_start_offset), self.high_watermark)

    def open_transactions(self) -> dict[int, int]:
        """Producer id → first offset of each transaction open in this partition."""
        with self.lock:
            return dict(self.producer_state.ongoing)

    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[tuple[int, int]]:
        """``(producer_id, first_offset)`` of each aborted transaction whose range meets
        ``[start_offset, end_offset)``, by first offset: what Fetch answers."""
        return [
            (entry.producer_id, entry.first_offset)
            for entry in self.aborted_ranges(start_offset, end_offset)
        ]

    def aborted_ranges(self, start_offset: int, end_offset: int) -> list[AbortedTransaction]:
        """:meth:`aborted_transactions` with each range's last offset (its ABORT marker)."""
        if not self.producer_state.aborted:
            return []
        with self.lock:
            return self.producer_state.aborted_overlapping(start_offset, end_offset)

    # -- appending ------------------------------------------------------------------------

    def append(self, records: Buffer, *, wait_durable: bool = True) -> AppendResult:
        """Validate and append the batches in ``records``; assign their offsets.

        With ``wait_durable`` (acks=all) and the default ``flush.ms=0`` the call returns
        only once the batches are fsynced. A refused batch (a typed error) or a failed
        write leaves the log unchanged. A failed fsync raises :class:`LogStorageError` and
        takes the partition offline: the batch is written but not acknowledged.
        """
        with self.lock:
            if self._closed or self.failure is not None:
                self.check_writable()
            result = self._append_locked(records)
        if result.duplicate and self._durable_offset > result.last_offset:
            return result  # else the original's fsync failed: the retry must wait for one
        if self.config.flush_every_append:
            if wait_durable:
                self.flush(up_to=result.last_offset + 1)
        else:
            self._flush_if_due()
        return result

    def _append_locked(self, records: Buffer) -> AppendResult:
        # Runs once per produced batch: header fields as plain tuples, one writev.
        # Field indexes follow BatchHeader: 1 batchLength, 6 lastOffsetDelta,
        # 8 maxTimestamp, 9 producerId, 11 baseSequence.
        config = self.config
        batches = frame_client_batches(records, config.max_message_bytes)
        for _, fields in batches:
            if fields[9] >= 0:  # a producer id: idempotence, producer state
                return self._append_from_producer(records, batches)
        self._maybe_roll(len(records))
        segment = self.segments[-1]
        base_offset = segment.next_offset
        leader_epoch = self.leader_epoch
        view = memoryview(records)
        if len(batches) == 1 and not config.log_append_time:  # the usual produce
            fields = batches[0][1]
            next_offset = base_offset + fields[6] + 1
            try:
                segment.append(
                    [assigned_prefix(base_offset, fields[1], leader_epoch), view[16:]],
                    [(base_offset, len(records), next_offset, fields[8])],
                )
            except OSError as error:
                raise self._write_failed(segment, error) from error
            return AppendResult(base_offset, next_offset - 1, -1, self.log_start_offset)
        parts, placed, append_time_ms = self._assign(view, batches, base_offset)
        self._write(segment, parts, placed)
        return AppendResult(base_offset, placed[-1][2] - 1, append_time_ms, self.log_start_offset)

    def _append_from_producer(
        self, records: Buffer, batches: list[tuple[int, tuple[int, ...]]]
    ) -> AppendResult:
        """Append batches that carry a producer id, checking idempotence first."""
        headers = [BatchHeader._make(fields) for _, fields in batches]
        idempotent = [header for header in headers if header.is_idempotent]
        if idempotent:
            if len(batches) != 1:
                raise InvalidRecordError(
                    "an idempotent producer must send one batch per partition per request"
                )
            original = self.producer_state.check(idempotent[0], topic_partition=self.name)
            if original is not None:
                return AppendResult(
                    original.base_offset, original.last_offset, -1, self.log_start_offset, True
                )
        self._maybe_roll(len(records))
        segment = self.segments[-1]
        base_offset = segment.next_offset
        parts, placed, append_time_ms = self._assign(memoryview(records), batches, base_offset)
        self._write(segment, parts, placed)
        now_ms = self.clock.time_ms()
        for header, (offset, *_) in zip(headers, placed, strict=True):
            if header.producer_id >= 0:
                self.producer_state.update(header._replace(base_offset=offset), now_ms)
        return AppendResult(base_offset, placed[-1][2] - 1, append_time_ms, self.log_start_offset)

    def write_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        *,
        commit: bool,
        coordinator_epoch: int = 0,
        wait_durable: bool = True,
    ) -> int:
        """Append a COMMIT or ABORT control batch for ``producer_id``; return its offset.

        It closes the producer's open transaction here (an abort is added to the aborted
        index) and moves the producer's epoch up to ``producer_epoch``. A marker for a
        producer with no open transaction is written all the same (the coordinator may
        retry after a crash) and changes nothing else. An epoch older than the producer's
        raises :class:`ProducerFencedError`. Durability as for :meth:`append`.
        """
        if producer_id < 0 or not 0 <= producer_epoch <= 0x7FFF:
            raise InvalidRecordError(
                f"{self.name}: a transaction marker needs a producer id and epoch, not "
                f"{producer_id} and {producer_epoch}"
            )
        with self.lock:
            self.check_writable()
            self.producer_state.check_marker(producer_id, producer_epoch, topic_partition=self.name)
            now_ms = self.clock.time_ms()
            batch = build_control_batch(
                producer_id, producer_epoch, commit=commit,
                coordinator_epoch=coordinator_epoch, timestamp_ms=now_ms,
            )  # fmt: skip
            self._maybe_roll(len(batch))
            segment = self.segments[-1]
            offset = segment.next_offset
            parts, placed, _ = self._assign(memoryview(batch), [(0, parse_header(batch))], offset)
            self._write(segment, parts, placed)
            self.producer_state.end_transaction(
                producer_id, producer_epoch, commit=commit, offset=offset, now_ms=now_ms
            )
        if self.config.flush_every_append:
            if wait_durable:
                self.flush(up_to=offset + 1)
        else:
            self._flush_if_due()
        return offset

    def _assign(
        self, view: memoryview, batches: list[tuple[int, tuple[int, ...]]], base_offset: int
    ) -> tuple[list[Buffer], list[tuple[int, int, int, int]], int]:
        """The bytes to write, with offsets assigned, and each batch's placement
        ``(base_offset, size, next_offset, max_timestamp)``."""
        append_time_ms = self.clock.time_ms() if self.config.log_append_time else -1
        parts: list[Buffer] = []
        placed: list[tuple[int, int, int, int]] = []
        next_offset = base_offset
        for position, fields in batches:
            size = fields[1] + BATCH_OVERHEAD_BYTES
            batch = view[position : position + size]
            max_timestamp = fields[8]
            if append_time_ms >= 0:
                batch = memoryview(with_log_append_time(batch, append_time_ms))
                max_timestamp = append_time_ms
            parts.append(assigned_prefix(next_offset, fields[1], self.leader_epoch))
            parts.append(batch[16:])
            batch_next_offset = next_offset + fields[6] + 1
            placed.append((next_offset, size, batch_next_offset, max_timestamp))
            next_offset = batch_next_offset
        return parts, placed, append_time_ms

    def _write(
        self, segment: Segment, parts: list[Buffer], placed: list[tuple[int, int, int, int]]
    ) -> None:
        try:
            segment.append(parts, placed)
        except OSError as error:
            raise self._write_failed(segment, error) from error

    def _write_failed(self, segment: Segment, error: OSError) -> LogStorageError:
        # The file handle truncated the partial write away: the log is unchanged.
        return LogStorageError(f"{self.name}: appending to {segment.path} failed: {error}")

    def _maybe_roll(self, incoming_bytes: int) -> None:
        active = self.segments[-1]
        if active.next_offset == active.base_offset:
            return  # never roll an empty segment
        too_big = active.file.size() + incoming_bytes > self.config.segment_bytes
        if too_big or (
            self.clock.monotonic_ms() - active.created_monotonic_ms >= self.config.segment_ms
        ):
            self.roll()

    def roll(self) -> None:
        """Close the active segment (fsynced, indexes written) and start a new one."""
        with self.lock:
            old = self.active
            if old.is_empty:
                return
            self.check_writable()
            try:
                old.file.fsync()  # not under _flush_lock: flush() takes the locks the other way
                old.write_index_files()
                self.segments.append(self._new_segment(old.next_offset))
                self._durable_offset = max(self._durable_offset, old.next_offset)
                self.recovery_point = max(self.recovery_point, old.next_offset)
                self._write_snapshot(old.next_offset)
                self._write_checkpoint(clean_shutdown=False)
            except OSError as error:
                raise self.go_offline(f"rolling {old.path} failed", error) from error

    def _new_segment(self, base_offset: int) -> Segment:
        segment = Segment(self.fs, self.directory, base_offset, self.config.index_interval_bytes)
        segment.created_monotonic_ms = self.clock.monotonic_ms()
        self.fs.fsync_dir(self.directory)  # the new file's name must survive a crash
        return segment

    def _write_snapshot(self, offset: int) -> None:
        path = f"{self.directory}/{segment_name(offset, '.snapshot')}"
        self.fs.write_file_atomic(path, self.producer_state.to_bytes())
        snapshots = sorted(
            name for name in self.fs.listdir(self.directory) if name.endswith(".snapshot")
        )
        for name in snapshots[:-_SNAPSHOTS_KEPT]:
            self.fs.remove(f"{self.directory}/{name}")

    # -- durability -----------------------------------------------------------------------

    def flush(self, up_to: int | None = None) -> None:
        """Make every offset below ``up_to`` (default: the log end) durable.

        Group commit: a caller that finds an fsync in progress waits for it, and returns
        at once if that fsync covered its offsets.
        """
        target = self.log_end_offset if up_to is None else up_to
        if target <= self._durable_offset:
            return
        with self._flush_lock:
            if target <= self._durable_offset:
                return  # a concurrent flush covered us
            with self.lock:
                self.check_writable()
                end = self.log_end_offset
                segment = self.active
            try:
                segment.file.fsync()
            except OSError as error:
                raise self.go_offline(f"fsync of {segment.path} failed", error) from error
            with self.lock:  # roll() and truncate_to() move it too
                self._durable_offset = min(max(self._durable_offset, end), self.log_end_offset)
            self._last_flush_ms = self.clock.monotonic_ms()

    def _flush_if_due(self) -> None:
        """Under ``flush.ms=N``: fsync when the last fsync is N ms old or more."""
        if self.config.flush_by_os:
            return
        if self.clock.monotonic_ms() - self._last_flush_ms >= self.config.flush_ms:
            self.flush()

    # -- deleting -------------------------------------------------------------------------

    def delete_records(self, before_offset: int) -> int:
        """Raise the log start offset to ``before_offset`` (Kafka's DeleteRecords)."""
        with self.lock:
            self.check_writable()
            if before_offset == -1:
                before_offset = self.high_watermark
            if not 0 <= before_offset <= self.high_watermark:
                raise OffsetOutOfRangeError(
                    f"{self.name}: cannot delete before {before_offset}; high watermark is "
                    f"{self.high_watermark}"
                )
            if before_offset > self.log_start_offset:
                self.log_start_offset = before_offset
                self._delete_segments_below_start()
                self.producer_state.forget_aborted_before(self.log_start_offset)
                self._write_checkpoint(clean_shutdown=False)
            return self.log_start_offset

    def _delete_segments_below_start(self) -> None:
        while len(self.segments) > 1 and self.segments[0].next_offset <= self.log_start_offset:
            self.segments.pop(0).delete()

    def apply_retention(self) -> int:
        """Delete old segments by ``retention.ms`` and ``retention.bytes``; count them."""
        with self.lock:
            self.check_writable()
            if not self.config.delete:
                return 0
            now_ms = self.clock.time_ms()
            active = self.active
            if (
                self.config.retention_ms >= 0
                and not active.is_empty
                and active.max_timestamp < now_ms - self.config.retention_ms
            ):
                self.roll()  # an expired active segment must roll before it can go
            deleted = 0
            size = sum(segment.size for segment in self.segments)
            while len(self.segments) > 1:
                oldest = self.segments[0]
                expired = (
                    self.config.retention_ms >= 0
                    and oldest.max_timestamp < now_ms - self.config.retention_ms
                )
                oversize = (
                    self.config.retention_bytes >= 0
                    and size - oldest.size >= self.config.retention_bytes
                )
                if not (expired or oversize):
                    break
                size -= oldest.size
                self.segments.pop(0).delete()
                deleted += 1
            if deleted:
                self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
                self.producer_state.forget_aborted_before(self.log_start_offset)
                self._write_checkpoint(clean_shutdown=False)
            return deleted

    def truncate_to(self, offset: int) -> None:
        """Drop everything at and after ``offset`` (a batch boundary)."""
        with self._flush_lock, self.lock:  # no fsync may count the dropped offsets durable
            self.check_writable()
            while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
                self.segments.pop().delete()
            self.active.truncate_to(offset)
            for name in self.fs.listdir(self.directory):  # producer state past the new end
                if name.endswith(".snapshot") and int(name[:-9]) > self.log_end_offset:
                    self.fs.remove(f"{self.directory}/{name}")
            self._durable_offset = min(self._durable_offset, self.log_end_offset)
            self.recovery_point = min(self.recovery_point, self.log_end_offset)
            # Reload from the newest snapshot left: replaying from the log start alone would
            # miss transactions that began before it (their markers would then hide nothing).
            self.producer_state = ProducerStateTable()
            self._load_producer_state()
            self._write_checkpoint(clean_shutdown=False)

    # -- maintenance and shutdown ---------------------------------------------------------

    def run_maintenance(self) -> None:
        """Periodic work the owner calls: interval flushes, time-based rolls, retention."""
        if self.failure is not None:
            return  # offline until reopened
        if not self.config.flush_every_append:
            self._flush_if_due()
        with self.lock:
            if not self.active.is_empty and (
                self.clock.monotonic_ms() - self.active.created_monotonic_ms
                >= self.config.segment_ms
            ):
                self.roll()
            self.producer_state.expire(self.clock.time_ms(), PRODUCER_ID_EXPIRATION_MS)
        self.apply_retention()

    def reconfigure(self, config: TopicConfig) -> None:
        with self.lock:
            self.config = config
            for segment in self.segments:
                segment.interval_bytes = config.index_interval_bytes

    def close(self) -> None:
        """Flush, write indexes and producer state, and mark the shutdown clean.

        An offline partition (a failed fsync) only closes its files: its next open
        recovers it like after a crash.
        """
        # _flush_lock first, as flush() takes them: no fsync is under way while closing.
        with self._flush_lock, self.lock:
            if self._closed:
                return
            if self.failure is not None:
                for segment in self.segments:
                    segment.close()
                self._closed = True
                return
            if self._durable_offset < self.log_end_offset:
                try:
                    self.active.file.fsync()
                except OSError as error:
                    raise self.go_offline("fsync at close failed", error) from error
                self._durable_offset = self.log_end_offset
            self.active.write_index_files()
            self.recovery_point = self.log_end_offset
            self._write_snapshot(self.log_end_offset)
            self._write_checkpoint(clean_shutdown=True)
            for segment in self.segments:
                segment.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:  # e.g. reopen_partition replaced it while another thread held it
            raise LogError(f"{self.name} is closed")

    def check_writable(self) -> None:
        """Raise if the partition is closed or offline after a failed fsync."""
        self._check_open()
        if self.failure is not None:
            raise LogStorageError(str(self.failure))

    def go_offline(self, what: str, error: OSError) -> LogStorageError:
        self.failure = LogStorageError(
            f"{self.name} is offline: {what}: {error}. Data written since the last "
            "successful fsync may be lost, so the partition takes no writes until the log "
            "is reopened (Log.reopen_partition), which recovers it from its durable state"
        )
        return self.failure

    def statistics(self) -> PartitionStatistics:
        with self.lock:
            return PartitionStatistics(
                topic=self.topic,
                partition=self.partition,
                log_start_offset=self.log_start_offset,
                log_end_offset=self.log_end_offset,
                high_watermark=self.high_watermark,
                durable_offset=self._durable_offset,
                segments=len(self.segments),
                size_bytes=sum(segment.size for segment in self.segments),
                producers=len(self.producer_state.producers),
            )
