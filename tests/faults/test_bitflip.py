"""Bit flips in stored batches, before and after the recovery point.

After the recovery point (the unsynced tail of an unclean shutdown) a damaged batch is
where the valid log ends: opening truncates there. Before it (a closed, rolled segment, or
anything after a clean close) the batches were durable once: opening must not drop them
silently; reading the damaged offset raises :class:`CorruptLogError` naming the file, the
topic, the partition and the offset, while the other segments stay readable.

The partitionLeaderEpoch field (bytes 12-15) is outside the CRC and used by nothing in
recovery, so flips there are undetectable by design and not tested.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from streamer.log import CorruptLogError, Log
from streamer.log.batch import parse_header

from .fault_helpers import (
    TOPIC,
    Workload,
    abandon,
    assert_same_batch,
    check_workload_log,
    flip_bit,
    make_batch,
    partition_dir,
    segment_files,
    split_stored,
    write_segmented_log,
)

CONFIG = {"segment.bytes": 8192, "index.interval.bytes": 512, "retention.ms": -1}
CASES = 32
_UNCHECKED_EPOCH = range(12, 16)


Written = tuple[Path, Workload, int, bool]  # root, workload, batches written, closed cleanly


def _written(tmp_path_factory: pytest.TempPathFactory, *, clean: bool) -> Written:
    root = tmp_path_factory.mktemp("bitflip") / "log"
    workload = Workload(seed=23)
    return root, workload, write_segmented_log(root, workload, CONFIG, clean=clean), clean


@pytest.fixture(scope="module")
def unclean_log(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Several segments; the writer died, so the last one is after the recovery point."""
    return _written(tmp_path_factory, clean=False)


@pytest.fixture(scope="module")
def clean_log(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Several segments, closed cleanly: every batch is before the recovery point."""
    return _written(tmp_path_factory, clean=True)


@pytest.fixture(params=["unclean_log", "clean_log"])
def written(request: pytest.FixtureRequest) -> Written:
    log: Written = request.getfixturevalue(request.param)
    return log


def _batches_of(path: Path) -> list[tuple[int, int]]:
    """(position, size) of each batch in a segment file."""
    data = path.read_bytes()
    found = []
    position = 0
    while position < len(data):
        size = parse_header(data, position).batch_length + 12
        found.append((position, size))
        position += size
    return found


# The first cases flip each header field in turn: baseOffset (outside the CRC, caught by
# the offset sequence), batchLength, magic, crc, attributes, lastOffsetDelta, timestamps,
# producer id and epoch, baseSequence and recordsCount; later cases pick any byte.
_HEADER_BYTES = (0, 4, 7, 8, 9, 11, 16, 17, 20, 21, 23, 26, 27, 35, 43, 51, 53, 57, 60)


def _pick_byte(rng: random.Random, size: int, case: int, *, lowest: int = 0) -> int:
    fields = [byte for byte in _HEADER_BYTES if byte >= lowest]
    if case < len(fields):
        return fields[case]
    while True:
        byte = rng.randrange(lowest, size)
        if byte not in _UNCHECKED_EPOCH:
            return byte


def _copy(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "log"
    shutil.copytree(source, root)
    return root


@pytest.mark.parametrize("case", range(CASES))
def test_flip_after_the_recovery_point_truncates_there(
    unclean_log: Written, tmp_path: Path, case: int
) -> None:
    source, workload, _, _ = unclean_log
    rng = random.Random(case)
    root = _copy(source, tmp_path)
    last = segment_files(partition_dir(root))[-1]
    batches = _batches_of(last)
    victim = rng.randrange(len(batches))
    position, size = batches[victim]
    flip_bit(last, position + _pick_byte(rng, size, case), rng.randrange(8))

    survivors = workload.index_of(int(last.name[:-4])) + victim
    with Log.open(root) as log:
        partition = log.partition(TOPIC, 0)
        acked = {i: workload.base_offset(i) for i in range(survivors)}
        assert check_workload_log(partition, workload, acked) == survivors
        assert any("truncated" in note for note in partition.recovery_notes)
        assert last.stat().st_size == position
        for index in range(survivors, survivors + 3):
            result = partition.append(workload.batch(index))
            assert (result.base_offset, result.duplicate) == (workload.base_offset(index), False)
    with Log.open(root) as log:
        assert check_workload_log(log.partition(TOPIC, 0), workload, acked) == survivors + 3


def _assert_names_the_damage(error: CorruptLogError, path: Path, offset: int) -> None:
    assert error.path == str(path)
    assert (error.topic, error.partition, error.offset) == (TOPIC, 0, offset)
    message = str(error)
    assert str(path) in message and f"{TOPIC}/0" in message and str(offset) in message


def _check_damaged_log(
    root: Path, workload: Workload, count: int, damaged_path: Path, damaged_index: int
) -> None:
    """The log still ends where it did, the damaged batch raises when read, every batch of
    the other segments reads back intact, and the log takes new batches."""
    damaged_offset = workload.base_offset(damaged_index)
    files = {path.name: path.stat().st_size for path in segment_files(partition_dir(root))}
    with Log.open(root) as log:
        partition = log.partition(TOPIC, 0)
        assert partition.log_end_offset == workload.base_offset(count)
        assert not any(": truncated " in note for note in partition.recovery_notes)
        with pytest.raises(CorruptLogError) as raised:
            partition.read(damaged_offset)
        _assert_names_the_damage(raised.value, damaged_path, damaged_offset)

        # A consumer reading the damaged segment from its start gets every batch before
        # the damaged one (whatever max_bytes), then the error: it stops exactly there.
        damaged_base = int(damaged_path.name[:-4])
        for max_bytes in (1, 1 << 20):
            offset = damaged_base
            while True:
                try:
                    records = partition.read(offset, max_bytes=max_bytes).records
                except CorruptLogError as error:
                    _assert_names_the_damage(error, damaged_path, damaged_offset)
                    break
                for batch in split_stored(records):
                    index = workload.index_of(offset)
                    assert_same_batch(batch, workload.batch(index), offset)
                    offset = workload.next_offset(index)
            assert offset == damaged_offset

        segment_bases = [int(path.name[:-4]) for path in segment_files(partition_dir(root))]
        for index in range(count):
            offset = workload.base_offset(index)
            base = max(base for base in segment_bases if base <= offset)
            if base == damaged_base:
                continue
            batch = split_stored(partition.read(offset, max_bytes=1).records)[0]
            assert_same_batch(batch, workload.batch(index), offset)

        result = partition.append(workload.batch(count))
        assert result.base_offset >= workload.base_offset(count)
    for name, size in files.items():  # nothing was cut away
        assert (partition_dir(root) / name).stat().st_size >= size


@pytest.mark.parametrize("case", range(CASES))
def test_flip_before_the_recovery_point_is_reported_not_dropped(
    written: Written, tmp_path: Path, case: int
) -> None:
    source, workload, count, clean = written
    rng = random.Random(1000 + case)
    root = _copy(source, tmp_path)
    files = segment_files(partition_dir(root))
    # Before the recovery point: a rolled segment, or (after a clean close) any segment.
    path = rng.choice(files if clean else files[:-1])
    batches = _batches_of(path)
    victim = rng.randrange(len(batches))
    position, size = batches[victim]
    flip_bit(path, position + _pick_byte(rng, size, case, lowest=16), rng.randrange(8))
    damaged_index = workload.index_of(int(path.name[:-4])) + victim
    _check_damaged_log(root, workload, count, path, damaged_index)
    # Still reported, not forgotten, after another (clean) restart.
    with Log.open(root) as log, pytest.raises(CorruptLogError):
        log.partition(TOPIC, 0).read(workload.base_offset(damaged_index))


@pytest.mark.parametrize("case", range(CASES))
def test_damaged_length_before_the_recovery_point_is_reported_not_dropped(
    written: Written, tmp_path: Path, case: int
) -> None:
    source, workload, count, clean = written
    rng = random.Random(2000 + case)
    root = _copy(source, tmp_path)
    files = segment_files(partition_dir(root))
    path = rng.choice(files if clean else files[:-1])
    batches = _batches_of(path)
    victim = rng.randrange(len(batches))
    position, _ = batches[victim]
    flip_bit(path, position + rng.randrange(8, 12), rng.randrange(8))
    damaged_index = workload.index_of(int(path.name[:-4])) + victim
    _check_damaged_log(root, workload, count, path, damaged_index)


def test_acknowledged_batches_after_old_damage_keep_their_offsets(tmp_path: Path) -> None:
    """Damage before the recovery point in the active segment, then a clean restart, more
    acknowledged appends, and a crash: the new batches' offsets are never handed out again,
    and nothing reads back wrong."""
    root = tmp_path / "log"
    workload = Workload(seed=29)
    with Log.open(root) as log:
        log.create_topic(TOPIC, 1, {"retention.ms": -1})
        partition = log.partition(TOPIC, 0)
        for index in range(10):
            partition.append(workload.batch(index))
    path = segment_files(partition_dir(root))[0]
    position, size = _batches_of(path)[3]
    flip_bit(path, position + size - 1, 0)

    log = Log.open(root)
    partition = log.partition(TOPIC, 0)
    for index in range(10, 15):  # acknowledged: flush.ms=0
        assert partition.append(workload.batch(index)).base_offset == workload.base_offset(index)
    abandon(log)

    for _ in range(2):  # a second restart must agree with the first
        with Log.open(root) as log:
            partition = log.partition(TOPIC, 0)
            assert partition.log_end_offset >= workload.base_offset(15)
            segments = partition.segments
            for before, after in zip(segments, segments[1:], strict=False):
                assert before.next_offset <= after.base_offset, "offsets overlap"
            with pytest.raises(CorruptLogError) as raised:
                partition.read(workload.base_offset(3))
            _assert_names_the_damage(raised.value, path, workload.base_offset(3))
            for index in range(15):
                try:
                    records = partition.read(workload.base_offset(index), max_bytes=1).records
                except CorruptLogError as error:
                    assert error.path == str(path)
                    continue
                batch = split_stored(records)[0]
                assert_same_batch(batch, workload.batch(index), workload.base_offset(index))
            # (A plain batch: the producer state of batches behind damage is not rebuilt.)
            end = partition.log_end_offset
            assert partition.append(make_batch([(b"k", b"v", 1)])).base_offset == end


@pytest.mark.parametrize("case", range(8))
def test_damaged_base_offset_before_the_recovery_point_is_reported(
    written: Written, tmp_path: Path, case: int
) -> None:
    """baseOffset is outside the CRC; a batch whose offsets run past the end of its
    segment (or, after a clean close, past the log end) must not move the log end."""
    source, workload, count, clean = written
    rng = random.Random(3000 + case)
    root = _copy(source, tmp_path)
    files = segment_files(partition_dir(root))
    path = rng.choice(files if clean else files[:-1])
    batches = _batches_of(path)
    victim = rng.randrange(len(batches))
    position, _ = batches[victim]
    flip_bit(path, position + rng.randrange(0, 4), rng.randrange(7))  # +2^32 at least
    damaged_index = workload.index_of(int(path.name[:-4])) + victim
    _check_damaged_log(root, workload, count, path, damaged_index)
