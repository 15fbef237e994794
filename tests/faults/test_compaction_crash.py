"""A crash in the middle of compaction loses no key's latest value.

compaction.py swaps a cleaned segment in through ``<base>.log.cleaned`` (written and
fsynced), renamed to ``<base>.log.swap`` (the commit point), then removes the old files and
renames the swap file to ``<base>.log``. Opening the partition discards a ``.cleaned`` file
and finishes a ``.swap``.

- In memory, a power cut at every filesystem mutation of a compaction run; after reopening,
  every key's latest record (offset and value, tombstones included) and every keyless
  record is still there, nothing else has changed, no temporary file is left, and the log
  can be compacted again and appended to.
- On disk, the leftovers are planted by hand as compaction would leave them: a partial
  ``.cleaned`` file, and a complete ``.swap`` file with all, some or none of the old
  segments it replaces still present.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from streamer.log import Log, ManualClock, OsFilesystem, PartitionLog, compact
from streamer.log.fs import Filesystem

from .fault_helpers import (
    CrashingFilesystem,
    SimulatedCrash,
    make_batch,
    records_of,
    segment_files,
    stored_batches,
)

ROOT = "/data"
TOPIC = "compacted"
CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": 1024,
    "index.interval.bytes": 128,
    "delete.retention.ms": 1 << 40,  # tombstones stay: they are some keys' latest value
    "retention.ms": -1,
}
PRODUCER_ID = 4242
Appended = dict[int, tuple[bytes | None, bytes | None]]  # offset -> (key, value)


def _build(fs: Filesystem, root: str = ROOT, seed: int = 1) -> tuple[Log, Appended]:
    """A compacted topic's log with many superseded values over many segments: the older
    ones compacted once already, so that compacting again merges them."""
    rng = random.Random(seed)
    log = Log.open(root, fs=fs, clock=ManualClock())
    log.create_topic(TOPIC, 1, CONFIG)
    partition = log.partition(TOPIC, 0)
    appended: Appended = {}
    sequence = 0
    for index in range(110):
        if index == 70:
            compact(partition)
        records = []
        for _ in range(rng.randint(1, 4)):
            key = None if rng.random() < 0.1 else f"key-{rng.randrange(12)}".encode()
            value = None if key and rng.random() < 0.1 else f"value-{index}-{rng.random()}"
            records.append((key, value.encode() if value else None, 1_000 + index))
        idempotent = rng.random() < 0.5
        batch = make_batch(
            records,
            producer_id=PRODUCER_ID if idempotent else -1,
            producer_epoch=0 if idempotent else -1,
            base_sequence=sequence if idempotent else -1,
        )
        sequence += len(records) if idempotent else 0
        base = partition.append(batch).base_offset
        for delta, (key, value, _) in enumerate(records):
            appended[base + delta] = (key, value)
    return log, appended


def _expected(appended: Appended) -> tuple[dict[bytes, tuple[int, bytes | None]], set[int]]:
    latest: dict[bytes, tuple[int, bytes | None]] = {}
    keyless = set()
    for offset, (key, value) in sorted(appended.items()):
        if key is None:
            keyless.add(offset)
        else:
            latest[key] = (offset, value)
    return latest, keyless


def _check(partition: PartitionLog, appended: Appended) -> None:
    """Every stored record is an appended one at its offset; every key's latest record and
    every keyless record is there; the log still ends where it did."""
    latest, keyless = _expected(appended)
    assert partition.log_end_offset == max(appended) + 1
    assert all(segment.corrupt_from is None for segment in partition.segments)
    found_latest: dict[bytes, tuple[int, bytes | None]] = {}
    found_keyless = set()
    previous = -1
    for batch in stored_batches(partition):
        for offset, key, value, _ in records_of(batch):
            assert offset > previous, "offsets must increase"
            previous = offset
            assert appended[offset] == (key, value), f"record at {offset} changed"
            if key is None:
                found_keyless.add(offset)
            else:
                found_latest[key] = (offset, value)
    assert found_latest == latest
    assert found_keyless == keyless


def _leftovers(fs: Filesystem, directory: str) -> list[str]:
    return [n for n in fs.listdir(directory) if n.endswith((".cleaned", ".swap", ".tmp"))]


def _operations_to_build_and_compact() -> tuple[int, int]:
    fs = CrashingFilesystem()
    log, _ = _build(fs)
    built = fs.operations
    result = compact(log.partition(TOPIC, 0))
    assert result.records_removed > 0
    assert result.segments_after < result.segments_before - 3, "no merges to crash in"
    return built, fs.operations - built


BUILD_OPERATIONS, COMPACT_OPERATIONS = _operations_to_build_and_compact()


def test_compaction_has_many_crash_points() -> None:
    assert COMPACT_OPERATIONS > 40


@pytest.mark.parametrize("crash_at", range(1, COMPACT_OPERATIONS + 1))
def test_power_cut_during_compaction_keeps_every_latest_value(crash_at: int) -> None:
    rng = random.Random(crash_at)
    fs = CrashingFilesystem(rng=rng)
    log, appended = _build(fs)
    fs.crash_at = BUILD_OPERATIONS + crash_at
    with pytest.raises(SimulatedCrash):
        compact(log.partition(TOPIC, 0))

    survivor = fs.crash(rng)
    directory = f"{ROOT}/topics/{TOPIC}/0"
    with Log.open(ROOT, fs=survivor, clock=ManualClock()) as log:
        partition = log.partition(TOPIC, 0)
        assert not _leftovers(survivor, directory)
        _check(partition, appended)
        compact(partition)  # the interrupted work can be done again
        _check(partition, appended)
        result = partition.append(make_batch([(b"key-0", b"after", 5_000)]))
        appended[result.base_offset] = (b"key-0", b"after")
        _check(partition, appended)
    with Log.open(ROOT, fs=survivor, clock=ManualClock()) as log:
        _check(log.partition(TOPIC, 0), appended)


# -- leftovers planted on disk ----------------------------------------------------------------


@pytest.fixture(scope="module")
def disk_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Appended]:
    """The same log twice on disk, closed cleanly: as written, and compacted."""
    base = tmp_path_factory.mktemp("compaction")
    original, compacted = base / "original", base / "compacted"
    log, appended = _build(OsFilesystem(), str(original))
    log.close()
    shutil.copytree(original, compacted)
    with Log.open(compacted) as log:
        compact(log.partition(TOPIC, 0))
    return original, compacted, appended


def _partition_dir(root: Path) -> Path:
    return root / "topics" / TOPIC / "0"


def _reopen_and_check(root: Path, appended: Appended) -> None:
    with Log.open(root) as log:
        assert not _leftovers(OsFilesystem(), str(_partition_dir(root)))
        _check(log.partition(TOPIC, 0), appended)
    with Log.open(root) as log:
        _check(log.partition(TOPIC, 0), appended)


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.99, 1.0])
def test_leftover_cleaned_file_is_discarded(
    disk_logs: tuple[Path, Path, Appended], tmp_path: Path, cut: float
) -> None:
    """Killed while writing (or before renaming) the cleaned segment: the old ones stay."""
    original, compacted, appended = disk_logs
    root = tmp_path / "log"
    shutil.copytree(original, root)
    cleaned = segment_files(_partition_dir(compacted))[0].read_bytes()
    name = segment_files(_partition_dir(root))[0].name + ".cleaned"
    (_partition_dir(root) / name).write_bytes(cleaned[: int(len(cleaned) * cut)])
    _reopen_and_check(root, appended)


@pytest.mark.parametrize("group", [0, 1, -2])
@pytest.mark.parametrize("removed", ["none", "first", "all-but-last", "all"])
def test_leftover_swap_file_is_finished(
    disk_logs: tuple[Path, Path, Appended], tmp_path: Path, group: int, removed: str
) -> None:
    """Killed after the commit point: the swap file replaces the segments it covers,
    whichever of them were already removed."""
    original, compacted, appended = disk_logs
    root = tmp_path / "log"
    shutil.copytree(original, root)
    new_segments = segment_files(_partition_dir(compacted))  # the last is the active one
    swap_source = new_segments[:-1][group]
    start = int(swap_source.name[:-4])
    end = int(new_segments[new_segments.index(swap_source) + 1].name[:-4])
    covered = [
        path for path in segment_files(_partition_dir(root)) if start <= int(path.name[:-4]) < end
    ]
    assert covered
    doomed = {
        "none": [],
        "first": covered[:1],
        "all-but-last": covered[:-1],
        "all": covered,
    }[removed]
    for path in doomed:
        for suffix in (".log", ".index", ".timeindex"):
            path.with_suffix(suffix).unlink(missing_ok=True)
    (_partition_dir(root) / (swap_source.name + ".swap")).write_bytes(swap_source.read_bytes())
    _reopen_and_check(root, appended)
