"""Regressions for bugs a review found: close racing flush, compaction over damage,
compaction failing half-way, and a crash inside a compaction swap."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest
import streamer.log.compaction as compaction
from streamer.log import (
    CorruptLogError,
    Log,
    LogError,
    LogStorageError,
    ManualClock,
    MemoryFilesystem,
    compact,
)

from .batches import ROOT, Record, build_batch, decode, read_all


def _open(fs: MemoryFilesystem, clock: ManualClock, config: dict[str, str]) -> Log:
    log = Log.open(ROOT, fs=fs, clock=clock)
    if not log.has_topic("t"):
        log.create_topic("t", 1, config)
    return log


def test_close_while_appenders_wait_for_fsync_does_not_deadlock(tmp_path: Path) -> None:
    log = Log.open(tmp_path)
    log.create_topic("t", 1)
    partition = log.partition("t", 0)
    stop = threading.Event()
    appended = [0] * 4

    def appender(slot: int) -> None:
        while not stop.is_set():
            try:
                partition.append(build_batch(1))  # flush.ms=0: waits for an fsync
            except LogError:
                return  # the partition closed under us: a clear error, not a hang
            appended[slot] += 1

    threads = [threading.Thread(target=appender, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    while sum(appended) < 40:
        threading.Event().wait(0.01)
    log.close()
    stop.set()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "an appender hung on close"
    with Log.open(tmp_path) as reopened:
        assert reopened.partition("t", 0).log_end_offset >= sum(appended)


def test_compaction_leaves_a_damaged_segment_alone() -> None:
    fs, clock = MemoryFilesystem(), ManualClock()
    log = _open(fs, clock, {"cleanup.policy": "compact"})
    partition = log.partition("t", 0)
    for i in range(5):
        partition.append(build_batch([Record(f"k{i}".encode(), b"v")]))
    partition.roll()
    partition.append(build_batch([Record(b"k0", b"newer")]))  # supersedes offset 0
    log.close()
    directory = f"{ROOT}/topics/t/0"
    segment = bytearray(fs.read_file(f"{directory}/{0:020d}.log"))
    position = 0
    for _ in range(2):
        position += struct.unpack_from(">i", segment, position + 8)[0] + 12
    segment[position + 16] = 7  # the batch at offset 2: its magic byte
    fs.write_file_atomic(f"{directory}/{0:020d}.log", bytes(segment))
    fs.remove(f"{directory}/{0:020d}.index")
    log = Log.open(ROOT, fs=fs, clock=clock)
    partition = log.partition("t", 0)
    assert partition.segments[0].corrupt_from is not None
    compact(partition)
    with pytest.raises(CorruptLogError):  # still reported, not compacted away
        partition.read(3)
    assert [r.offset for r in decode(partition.read(0).records)] == [0, 1]  # before it


def test_compaction_failing_midway_takes_the_partition_offline_and_reopen_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs, clock = MemoryFilesystem(), ManualClock()
    log = _open(fs, clock, {"cleanup.policy": "compact", "segment.bytes": "300"})
    partition = log.partition("t", 0)
    for i in range(12):
        partition.append(build_batch([Record(b"k%d" % (i % 3), b"v%d" % i)]))
    before = {r.key: r.value for r in read_all(partition)}
    real_swap = compaction._swap
    calls = []

    def swap_then_fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_swap(*args, **kwargs)

    monkeypatch.setattr(compaction, "_swap", swap_then_fail)
    with pytest.raises(LogStorageError, match="offline"):
        compact(partition)
    monkeypatch.undo()
    assert len(calls) == 2  # the first group was swapped, the second failed
    assert {r.key: r.value for r in read_all(partition)} == before  # reads go on
    recovered = log.reopen_partition("t", 0)
    assert {r.key: r.value for r in read_all(recovered)} == before
    compact(recovered)
    assert {r.key: r.value for r in read_all(recovered)} == before


def test_crash_after_swap_commit_removes_emptied_segments_of_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fs, clock = MemoryFilesystem(), ManualClock()
    log = _open(fs, clock, {"cleanup.policy": "compact", "segment.bytes": "1000"})
    partition = log.partition("t", 0)
    for keys in ("ab", "cd"):
        for key in keys:
            partition.append(build_batch([Record(key.encode(), b"x" * 100)]))
        partition.roll()
    partition.append(build_batch([Record(b"c", b"new-c")]))  # supersedes segment 2 wholly
    partition.append(build_batch([Record(b"d", b"new-d")]))

    def power_cut(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("power cut after the .swap rename")

    monkeypatch.setattr(compaction, "finish_swap", power_cut)
    with pytest.raises(KeyboardInterrupt):
        compact(partition)
    monkeypatch.undo()
    survivor = Log.open(ROOT, fs=fs.crash(), clock=clock)
    stored = read_all(survivor.partition("t", 0), 0)
    assert [(r.offset, r.key) for r in stored] == [(0, b"a"), (1, b"b"), (4, b"c"), (5, b"d")]
