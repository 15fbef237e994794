"""Torn tails: a crash leaves the last segment cut short, perhaps with garbage after it.

On disk: after an unclean shutdown the last segment is truncated at random points and
random garbage is appended; reopening must cut it back to the last whole valid batch,
keep everything before intact, and go on appending at contiguous offsets.

In memory: :meth:`MemoryFilesystem.crash` drops what was never fsynced, keeps a random
prefix of each unsynced tail and sometimes adds garbage; every batch the log reported
durable must survive, and what survives beyond that must be an intact prefix.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from streamer.log import FLUSH_BY_OS, Log, ManualClock, MemoryFilesystem
from streamer.log.batch import parse_header

from .fault_helpers import (
    TOPIC,
    Workload,
    check_workload_log,
    partition_dir,
    segment_files,
    stored_batches,
    write_segmented_log,
)

CONFIG = {"segment.bytes": 8192, "index.interval.bytes": 512, "retention.ms": -1}
CASES = 48


@pytest.fixture(scope="module")
def unclean_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Workload, int]:
    """A log of several segments whose writer died (partition.json says unclean)."""
    root = tmp_path_factory.mktemp("torn") / "log"
    workload = Workload(seed=11)
    count = write_segmented_log(root, workload, CONFIG, clean=False)
    return root, workload, count


def _garbage(rng: random.Random, first_batch: bytes) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return b""
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 300))
    if kind == 2:
        return bytes(rng.randrange(1, 5000))  # a file extended but never written: zeros
    if kind == 3:
        return first_batch[: rng.randrange(1, len(first_batch))]  # a plausible header
    return first_batch  # a whole, valid batch, at an offset that does not follow on


@pytest.mark.parametrize("case", range(CASES))
def test_torn_last_segment_is_cut_to_the_last_whole_batch(
    unclean_log: tuple[Path, Workload, int], tmp_path: Path, case: int
) -> None:
    source, workload, written = unclean_log
    rng = random.Random(case)
    root = tmp_path / "log"
    shutil.copytree(source, root)
    last = segment_files(partition_dir(root))[-1]
    data = last.read_bytes()
    if rng.random() < 0.3:  # near a batch boundary, where off-by-one errors live
        boundaries = []
        position = 0
        while position < len(data):
            position += parse_header(data, position).batch_length + 12
            boundaries.append(position)
        cut = max(0, min(len(data), rng.choice(boundaries) + rng.randint(-2, 2)))
    else:
        cut = rng.randrange(len(data) + 1)
    first_batch = segment_files(partition_dir(root))[0].read_bytes()
    first_batch = first_batch[: parse_header(first_batch).batch_length + 12]
    torn = data[:cut] + _garbage(rng, first_batch)
    last.write_bytes(torn)

    # The whole batches before the cut survive (garbage may happen to restore a cut byte),
    # nothing after them.
    survivors = workload.index_of(int(last.name[:-4]))
    position = 0
    while survivors < written:
        end = position + len(workload.batch(survivors))
        if torn[position:end] != data[position:end]:
            break
        position = end
        survivors += 1

    log = Log.open(root)
    partition = log.partition(TOPIC, 0)
    acked = {i: workload.base_offset(i) for i in range(survivors)}
    assert check_workload_log(partition, workload, acked) == survivors
    assert last.stat().st_size == position, "the torn bytes were not truncated away"
    if len(torn) > position:
        assert any("truncated" in note for note in partition.recovery_notes)

    for index in range(survivors, survivors + 3):  # appendable, offsets contiguous
        result = partition.append(workload.batch(index))
        assert not result.duplicate
        assert result.base_offset == workload.base_offset(index)
    log.close()
    with Log.open(root) as log:
        partition = log.partition(TOPIC, 0)
        assert check_workload_log(partition, workload, acked) == survivors + 3
        assert not partition.recovery_notes


@pytest.mark.parametrize("seed", range(200))
def test_memory_crash_keeps_every_durable_batch(seed: int) -> None:
    rng = random.Random(seed)
    workload = Workload(seed)
    fs = MemoryFilesystem()
    clock = ManualClock()
    flush_ms = rng.choice([0, 0, 50, FLUSH_BY_OS])
    config = {
        "segment.bytes": rng.choice([512, 2048, 8192, 1 << 20]),
        "index.interval.bytes": rng.choice([0, 100, 4096]),
        "retention.ms": -1,
        "flush.ms": flush_ms,
    }
    log = Log.open("/data", fs=fs, clock=clock)
    log.create_topic(TOPIC, 1, config)
    partition = log.partition(TOPIC, 0)
    appended = 0
    for _ in range(rng.randint(0, 40)):
        wait = rng.random() < 0.8
        result = partition.append(workload.batch(appended), wait_durable=wait)
        appended += 1
        if flush_ms == 0 and wait:
            assert partition.durable_offset > result.last_offset
        choice = rng.random()
        if choice < 0.05:
            partition.flush()
        elif choice < 0.1:
            clock.advance(rng.randint(0, 100))
        elif choice < 0.13:
            log.close()
            log = Log.open("/data", fs=fs, clock=clock)
            partition = log.partition(TOPIC, 0)
    durable = 0
    while durable < appended and workload.next_offset(durable) <= partition.durable_offset:
        durable += 1

    survivor = fs.crash(rng)
    log = Log.open("/data", fs=survivor, clock=clock)
    partition = log.partition(TOPIC, 0)
    acked = {i: workload.base_offset(i) for i in range(durable)}
    count = check_workload_log(partition, workload, acked)
    assert durable <= count <= appended

    result = partition.append(workload.batch(count))
    assert (result.base_offset, result.duplicate) == (workload.base_offset(count), False)
    log.close()
    with Log.open("/data", fs=survivor, clock=clock) as log:
        assert len(stored_batches(log.partition(TOPIC, 0))) == count + 1


def test_crash_losing_the_tail_after_delete_records_never_reuses_deleted_offsets() -> None:
    """DeleteRecords up to the log end is checkpointed at once; the records before it
    were not fsynced (flush.ms by the OS) and a power cut loses them: the log must start
    empty at the log start offset, not hand out the deleted offsets again."""
    workload = Workload(seed=41)
    fs = MemoryFilesystem()
    log = Log.open("/data", fs=fs, clock=ManualClock())
    log.create_topic(TOPIC, 1, {"flush.ms": FLUSH_BY_OS, "retention.ms": -1})
    partition = log.partition(TOPIC, 0)
    for index in range(3):
        partition.append(workload.batch(index))
    partition.flush()
    for index in range(3, 8):
        partition.append(workload.batch(index))
    deleted_up_to = partition.delete_records(-1)
    assert deleted_up_to == workload.base_offset(8)

    with Log.open("/data", fs=fs.crash(), clock=ManualClock()) as log:
        partition = log.partition(TOPIC, 0)
        assert partition.log_start_offset == deleted_up_to
        assert partition.log_end_offset == deleted_up_to
        assert partition.read(deleted_up_to).records == b""
        result = partition.append(workload.batch(8))
        assert result.base_offset == deleted_up_to
        assert len(stored_batches(partition)) == 1
