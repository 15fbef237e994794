"""Flush policy, group commit, crashes after acknowledged appends, and disk failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from streamer.log import (
    FLUSH_BY_OS,
    Log,
    LogStorageError,
    ManualClock,
    MemoryFilesystem,
    OsFilesystem,
    PartitionLog,
    TopicConfig,
)
from streamer.log.fs import Buffer, FileHandle

from .batches import (
    ROOT,
    PartitionFactory,
    build_batch,
    idempotent_batch,
    partition_files,
    read_all,
    records,
)


class _CountingHandle:
    """A file handle whose fsync is counted and takes a while, as on a real disk."""

    def __init__(self, inner: FileHandle, counter: _FsyncCounter) -> None:
        self._inner = inner
        self._counter = counter

    def append(self, parts: Sequence[Buffer]) -> None:
        self._inner.append(parts)

    def pread(self, size: int, position: int) -> bytes:
        return self._inner.pread(size, position)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def fsync(self) -> None:
        self._counter.count()
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()


class _FsyncCounter:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.fsyncs = 0
        self._lock = threading.Lock()

    def count(self) -> None:
        time.sleep(self.delay_s)
        with self._lock:
            self.fsyncs += 1


class CountingMemoryFilesystem(MemoryFilesystem):
    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.counter = _FsyncCounter(delay_s)

    def open(self, path: str) -> FileHandle:
        return _CountingHandle(super().open(path), self.counter)


class CountingOsFilesystem(OsFilesystem):
    def __init__(self, delay_s: float = 0.0) -> None:
        self.counter = _FsyncCounter(delay_s)

    def open(self, path: str) -> FileHandle:
        return _CountingHandle(super().open(path), self.counter)


# -- flush policy -------------------------------------------------------------------------


def test_default_flush_makes_each_append_durable_before_it_returns(
    partition: PartitionLog,
) -> None:
    assert partition.config.flush_ms == 0
    for i in range(5):
        result = partition.append(build_batch(records(3, prefix=f"{i}-")))
        assert partition.durable_offset == result.last_offset + 1
        assert partition.statistics().durable_offset == result.last_offset + 1


def test_acknowledged_appends_survive_a_crash(fs: MemoryFilesystem, clock: ManualClock) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 2, {"segment.bytes": 400})
    acknowledged = []
    for i in range(12):
        partition = log.partition("t", i % 2)
        acknowledged.append((i % 2, partition.append(build_batch(3)).base_offset))
    expected = {p: read_all(log.partition("t", p)) for p in (0, 1)}
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        for p in (0, 1):
            partition = survivor.partition("t", p)
            assert partition.log_end_offset == 18
            assert read_all(partition) == expected[p]
            assert partition.append(build_batch(1)).base_offset == 18


def test_wait_durable_false_defers_the_fsync(partition: PartitionLog) -> None:
    partition.append(build_batch(2))
    result = partition.append(build_batch(3), wait_durable=False)
    assert partition.durable_offset == 2
    partition.flush(up_to=result.last_offset + 1)
    assert partition.durable_offset == 5


def test_flush_by_os_lags_until_flush(make_partition: PartitionFactory, fs: MemoryFilesystem):
    partition = make_partition({"flush.ms": FLUSH_BY_OS})
    assert partition.config.flush_by_os
    partition.append(build_batch(3))
    partition.append(build_batch(2))
    assert partition.durable_offset == 0
    assert partition.log_end_offset == 5
    partition.flush()
    assert partition.durable_offset == 5
    partition.append(build_batch(1))
    assert partition.durable_offset == 5


def test_flush_by_os_loses_the_unflushed_tail_in_a_crash(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t", 1, {"flush.ms": FLUSH_BY_OS})
    partition = log.partition("t", 0)
    partition.append(build_batch(3))
    partition.flush()
    partition.append(build_batch(2))  # acknowledged, never fsynced
    assert partition.durable_offset == 3
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        reopened = survivor.partition("t", 0)
        assert reopened.log_end_offset == 3
        assert [r.offset for r in read_all(reopened)] == [0, 1, 2]


def test_a_roll_makes_the_closed_segment_durable(make_partition: PartitionFactory) -> None:
    partition = make_partition({"flush.ms": FLUSH_BY_OS, "segment.bytes": 150})
    partition.append(build_batch(2))
    partition.append(build_batch(2))  # rolls: segment 0 is fsynced as it closes
    assert len(partition.segments) == 2
    assert partition.durable_offset == 2


def test_flush_interval(make_partition: PartitionFactory, clock: ManualClock) -> None:
    partition = make_partition({"flush.ms": 1000})
    partition.append(build_batch(1))
    assert partition.durable_offset == 0
    clock.advance(600)
    partition.append(build_batch(1))
    assert partition.durable_offset == 0
    clock.advance(400)
    partition.append(build_batch(1))  # the last fsync is 1000 ms old: this append flushes
    assert partition.durable_offset == 3
    partition.append(build_batch(1))
    assert partition.durable_offset == 3
    clock.advance(1000)
    partition.run_maintenance()  # the owner's periodic call flushes too
    assert partition.durable_offset == 4


def test_memory_log_leaves_flushing_to_the_os() -> None:
    with Log.memory() as log:
        log.create_topic("t")
        partition = log.partition("t", 0)
        assert partition.config.flush_ms == FLUSH_BY_OS
        partition.append(build_batch(1))
        assert partition.durable_offset == 0
        log.flush()
        assert partition.durable_offset == 1


def test_close_flushes(fs: MemoryFilesystem, clock: ManualClock) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock, default_config=TopicConfig(flush_ms=FLUSH_BY_OS))
    log.create_topic("t")
    log.partition("t", 0).append(build_batch(4))
    log.close()
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        assert survivor.partition("t", 0).log_end_offset == 4


# -- group commit -------------------------------------------------------------------------


def _append_concurrently(
    partition: PartitionLog, threads: int, appends: int
) -> list[tuple[int, int]]:
    """Each thread appends and checks that its batch is durable when append returns."""
    acknowledged: list[tuple[int, int]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(threads)
    guard = threading.Lock()

    def produce(worker: int) -> None:
        try:
            start.wait()
            for i in range(appends):
                batch = build_batch(records(2, prefix=f"w{worker}-{i}-"))
                result = partition.append(batch, wait_durable=True)
                assert partition.durable_offset > result.last_offset
                with guard:
                    acknowledged.append((result.base_offset, result.last_offset))
        except BaseException as error:  # re-raised in the main thread below
            failures.append(error)

    workers = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures, failures
    return acknowledged


def test_group_commit_shares_fsyncs_in_memory(clock: ManualClock) -> None:
    fs = CountingMemoryFilesystem(delay_s=0.003)
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t")
    partition = log.partition("t", 0)
    before = fs.counter.fsyncs
    acknowledged = _append_concurrently(partition, threads=8, appends=25)
    appends = len(acknowledged)
    fsyncs = fs.counter.fsyncs - before
    assert appends == 200
    assert 1 <= fsyncs < appends * 3 // 4, (fsyncs, appends)  # typically under half
    offsets = sorted(acknowledged)
    assert [base for base, _ in offsets] == list(range(0, 400, 2))
    assert partition.durable_offset == 400
    with Log.open(ROOT, fs=fs.crash(), clock=clock) as survivor:
        reopened = survivor.partition("t", 0)
        assert reopened.log_end_offset == 400
        assert [r.offset for r in read_all(reopened)] == list(range(400))


def test_group_commit_shares_fsyncs_on_disk(tmp_path: Path, clock: ManualClock) -> None:
    fs = CountingOsFilesystem(delay_s=0.003)
    with Log.open(tmp_path, fs=fs, clock=clock) as log:
        log.create_topic("t")
        partition = log.partition("t", 0)
        before = fs.counter.fsyncs
        acknowledged = _append_concurrently(partition, threads=4, appends=20)
        fsyncs = fs.counter.fsyncs - before
        assert len(acknowledged) == 80
        assert 1 <= fsyncs < len(acknowledged), fsyncs
    with Log.open(tmp_path, clock=clock) as log:
        assert log.partition("t", 0).log_end_offset == 160


def test_sequential_appends_fsync_once_each(clock: ManualClock) -> None:
    fs = CountingMemoryFilesystem()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t")
    partition = log.partition("t", 0)
    before = fs.counter.fsyncs
    for _ in range(5):
        partition.append(build_batch(1))
    assert fs.counter.fsyncs - before == 5
    partition.flush()  # nothing new: no fsync
    assert fs.counter.fsyncs - before == 5


# -- disk failures ------------------------------------------------------------------------


def test_disk_full_refuses_the_append_and_changes_nothing(clock: ManualClock) -> None:
    fs = MemoryFilesystem()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("t")
    partition = log.partition("t", 0)
    partition.append(build_batch(3))
    fs.capacity_bytes = fs.used_bytes() + 50
    files = partition_files(fs, partition)
    with pytest.raises(LogStorageError, match="No space left") as raised:
        partition.append(build_batch(3))
    assert raised.value.kafka_error_code == 56
    assert partition.log_end_offset == 3
    assert partition.durable_offset == 3
    assert partition_files(fs, partition) == files
    assert [r.offset for r in read_all(partition)] == [0, 1, 2]
    fs.capacity_bytes = None
    assert partition.append(build_batch(2)).base_offset == 3
    assert [r.offset for r in read_all(partition)] == [0, 1, 2, 3, 4]


def test_write_error_refuses_the_append_and_changes_nothing(
    partition: PartitionLog, fs: MemoryFilesystem
) -> None:
    partition.append(build_batch(2))
    files = partition_files(fs, partition)
    fs.fail_next_write = OSError(5, "Input/output error")
    with pytest.raises(LogStorageError, match="Input/output error"):
        partition.append(build_batch(2))
    assert partition.log_end_offset == 2
    assert partition_files(fs, partition) == files
    assert partition.append(build_batch(2)).base_offset == 2
    assert partition.durable_offset == 4


def test_write_error_after_a_roll(
    make_partition: PartitionFactory, fs: MemoryFilesystem, log: Log, clock: ManualClock
) -> None:
    partition = make_partition({"segment.bytes": 150}, topic="rolls")
    partition.append(build_batch(2))
    fs.fail_next_write = OSError(28, "No space left on device")
    with pytest.raises(LogStorageError):
        partition.append(build_batch(2))  # rolled first, then failed in the new segment
    assert partition.log_end_offset == 2
    assert partition.append(build_batch(2)).base_offset == 2
    assert [r.offset for r in read_all(partition)] == [0, 1, 2, 3]
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        again = reopened.partition("rolls", 0)
        assert [r.offset for r in read_all(again)] == [0, 1, 2, 3]


def test_idempotent_retry_after_a_write_error(
    partition: PartitionLog, fs: MemoryFilesystem
) -> None:
    partition.append(idempotent_batch(1, sequence=0))
    fs.fail_next_write = OSError(5, "Input/output error")
    with pytest.raises(LogStorageError):
        partition.append(idempotent_batch(1, sequence=1))
    retry = partition.append(idempotent_batch(1, sequence=1))  # not taken for a duplicate
    assert not retry.duplicate
    assert retry.base_offset == 1


def test_fsync_error_takes_the_partition_offline_until_reopened(
    partition: PartitionLog, fs: MemoryFilesystem, log: Log
) -> None:
    partition.append(build_batch(2))
    fs.fail_next_fsync = OSError(5, "Input/output error")
    with pytest.raises(LogStorageError, match="fsync"):
        partition.append(build_batch(2))
    assert partition.durable_offset == 2  # the failed batch was never called durable
    # After a failed fsync the kernel may have dropped the pages: no more writes, and no
    # later fsync may pretend the batch is durable.
    with pytest.raises(LogStorageError, match="offline"):
        partition.append(build_batch(1))
    with pytest.raises(LogStorageError, match="offline"):
        partition.flush()
    assert partition.durable_offset == 2
    assert partition.read(0).records  # reads go on
    recovered = log.reopen_partition(partition.topic, 0)
    assert recovered.log_end_offset == 4  # the written batch was intact, so recovery kept it
    result = recovered.append(build_batch(1))
    assert result.base_offset == 4
    assert recovered.durable_offset == 5
