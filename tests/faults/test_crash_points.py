"""A power cut at every single filesystem mutation of a workload, and during recovery too.

The deterministic counterpart of test_kill.py: the same workload runs over a
:class:`CrashingFilesystem` that stops at its Nth mutation (file creation, append, fsync,
truncate, rename, remove, directory fsync, atomic file write), for every N, so the cut
lands inside rolls, index writes, producer snapshots, checkpoint writes, clean closes and
the topic's creation. :meth:`MemoryFilesystem.crash` then keeps only what was fsynced
(plus a random torn prefix of the rest). Reopening must keep every batch whose append
returned, intact, at contiguous offsets; one time in three recovery itself is cut short
by a second power cut and must still come out right.
"""

from __future__ import annotations

import random

import pytest
from streamer.log import Log, ManualClock, MemoryFilesystem

from .fault_helpers import (
    TOPIC,
    CrashingFilesystem,
    SimulatedCrash,
    Workload,
    check_workload_log,
)

ROOT = "/data"
SEED = 5
BATCHES = 48
CONFIG = {"segment.bytes": 4096, "index.interval.bytes": 512, "retention.ms": -1}


def _workload_run(fs: MemoryFilesystem, acked: dict[int, int]) -> None:
    """Create the topic and append BATCHES batches, closing and reopening the log twice;
    every append that returns is recorded in ``acked``."""
    workload = Workload(SEED)
    clock = ManualClock()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic(TOPIC, 1, CONFIG)
    partition = log.partition(TOPIC, 0)
    for index in range(BATCHES):
        acked[index] = partition.append(workload.batch(index)).base_offset
        if index % 16 == 15:
            log.close()
            log = Log.open(ROOT, fs=fs, clock=clock)
            partition = log.partition(TOPIC, 0)
    log.close()


def _count_operations() -> int:
    fs = CrashingFilesystem()
    _workload_run(fs, {})
    return fs.operations


OPERATIONS = _count_operations()


def _reopen(fs: MemoryFilesystem, rng: random.Random) -> tuple[Log, MemoryFilesystem]:
    """Open the crashed log; one time in three a second power cut hits during recovery."""
    if rng.random() < 1 / 3:
        crashing = CrashingFilesystem.from_memory(fs, rng.randint(1, 12), rng)
        try:
            log = Log.open(ROOT, fs=crashing, clock=ManualClock())
        except SimulatedCrash:
            fs = crashing.crash(rng)
        else:
            crashing.crash_at = None  # recovery finished first: no second cut
            return log, crashing
    return Log.open(ROOT, fs=fs, clock=ManualClock()), fs


def test_the_workload_has_many_crash_points() -> None:
    assert OPERATIONS > 150


@pytest.mark.parametrize("crash_at", range(1, OPERATIONS + 1))
def test_power_cut_at_every_mutation_keeps_acknowledged_batches(crash_at: int) -> None:
    rng = random.Random(crash_at)
    fs = CrashingFilesystem(crash_at, rng)
    acked: dict[int, int] = {}
    with pytest.raises(SimulatedCrash):
        _workload_run(fs, acked)
    log, fs_after = _reopen(fs.crash(rng), rng)
    workload = Workload(SEED)
    if not log.has_topic(TOPIC):
        assert not acked, "the topic was lost after a batch was acknowledged"
        return
    partition = log.partition(TOPIC, 0)
    count = check_workload_log(partition, workload, acked, strict=True)

    for index in range(count, count + 3):  # appendable, offsets contiguous
        result = partition.append(workload.batch(index))
        assert (result.base_offset, result.duplicate) == (workload.base_offset(index), False)
    log.close()
    with Log.open(ROOT, fs=fs_after, clock=ManualClock()) as log:
        partition = log.partition(TOPIC, 0)
        assert check_workload_log(partition, workload, acked) == count + 3
        assert not partition.recovery_notes
