"""Lost or damaged index files and checkpoint: reopening rebuilds them from the segments.

The ``.index`` / ``.timeindex`` files of every segment are deleted, truncated, filled with
garbage or swapped between segments, and ``partition.json`` is garbled or removed; after
reopening, reads (at every batch, inside batches, with small and large ``max_bytes``) and
``offset_for_timestamp`` must answer exactly as before, and after a clean close the index
files on disk are whole again.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from streamer.log import Log, PartitionLog

from .fault_helpers import (
    TOPIC,
    Workload,
    partition_dir,
    records_of,
    segment_files,
    stored_batches,
    write_segmented_log,
)

CONFIG = {"segment.bytes": 8192, "index.interval.bytes": 256, "retention.ms": -1}
Answers = dict[str, object]


def _answers(partition: PartitionLog, workload: Workload, count: int) -> Answers:
    """Every read and timestamp lookup worth asking, with their answers."""
    reads = {}
    for index in range(count):
        first, last = workload.base_offset(index), workload.next_offset(index) - 1
        for offset in {first, last, (first + last) // 2}:
            for max_bytes in (1, 3000, 1 << 20):
                reads[(offset, max_bytes)] = partition.read(offset, max_bytes).records
    timestamps = {record[3] for batch in stored_batches(partition) for record in records_of(batch)}
    probes = sorted(timestamps | {t + 1 for t in timestamps} | {min(timestamps) - 1000})
    return {
        "log_end_offset": partition.log_end_offset,
        "log_start_offset": partition.log_start_offset,
        "reads": reads,
        "times": {t: partition.offset_for_timestamp(t) for t in probes},
    }


Source = tuple[Path, Workload, int, Answers, dict[str, bytes], bool]


def _source(tmp_path_factory: pytest.TempPathFactory, *, clean: bool) -> Source:
    root = tmp_path_factory.mktemp("indexes") / "log"
    workload = Workload(seed=31)
    count = write_segmented_log(root, workload, CONFIG, clean=clean)
    indexes = {
        path.name: path.read_bytes()
        for suffix in (".index", ".timeindex")
        for path in segment_files(partition_dir(root), suffix)
    }
    with Log.open(root) as log:
        partition = log.partition(TOPIC, 0)
        assert not partition.recovery_notes
        answers = _answers(partition, workload, count)
    return root, workload, count, answers, indexes, clean


@pytest.fixture(scope="module")
def clean_source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return _source(tmp_path_factory, clean=True)


@pytest.fixture(scope="module")
def unclean_source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return _source(tmp_path_factory, clean=False)


def _each_index(directory: Path, action: Callable[[Path, random.Random], None]) -> None:
    for suffix in (".index", ".timeindex"):
        for path in segment_files(directory, suffix):
            action(path, random.Random(path.name))


def _delete(suffixes: tuple[str, ...]) -> Callable[[Path], None]:
    def mutate(directory: Path) -> None:
        for suffix in suffixes:
            for path in segment_files(directory, suffix):
                path.unlink()

    return mutate


def _truncate(directory: Path) -> None:
    _each_index(directory, lambda p, rng: p.write_bytes(p.read_bytes()[: rng.randrange(40)]))


def _truncate_aligned(directory: Path) -> None:
    """Both files cut to the same number of entries: a valid index, just shorter."""
    for path in segment_files(directory, ".index"):
        time_path = path.with_suffix(".timeindex")
        entries = random.Random(path.name).randrange(len(path.read_bytes()) // 8 + 1)
        path.write_bytes(path.read_bytes()[: entries * 8])
        time_path.write_bytes(time_path.read_bytes()[: entries * 12])


def _garbage_same_length(directory: Path) -> None:
    _each_index(directory, lambda p, rng: p.write_bytes(rng.randbytes(p.stat().st_size)))


def _garbage_any_length(directory: Path) -> None:
    _each_index(directory, lambda p, rng: p.write_bytes(rng.randbytes(rng.randrange(200))))


def _zeros(directory: Path) -> None:
    _each_index(directory, lambda p, rng: p.write_bytes(bytes(p.stat().st_size)))


def _swapped(directory: Path) -> None:
    """Each segment gets the (valid-looking) index files of the next one."""
    for suffix in (".index", ".timeindex"):
        paths = segment_files(directory, suffix)
        contents = [path.read_bytes() for path in paths]
        for path, content in zip(paths, contents[1:] + contents[:1], strict=True):
            path.write_bytes(content)


def _checkpoint(content: bytes | None) -> Callable[[Path], None]:
    def mutate(directory: Path) -> None:
        path = directory / "partition.json"
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)

    return mutate


def _everything(directory: Path) -> None:
    _garbage_any_length(directory)
    _checkpoint(random.Random(7).randbytes(50))(directory)


MUTATIONS: dict[str, Callable[[Path], None]] = {
    "delete-index": _delete((".index",)),
    "delete-timeindex": _delete((".timeindex",)),
    "delete-both": _delete((".index", ".timeindex")),
    "truncate": _truncate,
    "truncate-aligned": _truncate_aligned,
    "garbage-same-length": _garbage_same_length,
    "garbage-any-length": _garbage_any_length,
    "zeros": _zeros,
    "swapped": _swapped,
    "checkpoint-missing": _checkpoint(None),
    "checkpoint-empty": _checkpoint(b""),
    "checkpoint-garbage": _checkpoint(random.Random(3).randbytes(64)),
    "checkpoint-truncated": _checkpoint(b'{"recovery_point": 12, "log_sta'),
    "checkpoint-not-an-object": _checkpoint(b"[1, 2, 3]"),
    "checkpoint-wrong-types": _checkpoint(
        json.dumps({"recovery_point": "12", "log_start_offset": None, "clean_shutdown": 1}).encode()
    ),
    "checkpoint-negative": _checkpoint(b'{"recovery_point": -1, "clean_shutdown": true}'),
    "everything": _everything,
}


# Mutations that can leave an index that passes every check (a shorter prefix, or a single
# first entry, is a valid sparse index): the log may keep it, so the files on disk may
# differ from the originals while every answer stays the same.
PLAUSIBLE = {"truncate", "truncate-aligned", "zeros", "swapped"}


@pytest.mark.parametrize("state", ["clean", "unclean"])
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_damaged_indexes_and_checkpoint_are_rebuilt(
    request: pytest.FixtureRequest, tmp_path: Path, state: str, mutation: str
) -> None:
    source, workload, count, answers, indexes, _ = request.getfixturevalue(f"{state}_source")
    root = tmp_path / "log"
    shutil.copytree(source, root)
    MUTATIONS[mutation](partition_dir(root))

    with Log.open(root) as log:
        partition = log.partition(TOPIC, 0)
        damage = [n for n in partition.recovery_notes if "damaged" in n or ": truncated" in n]
        assert not damage
        assert _answers(partition, workload, count) == answers
    if mutation not in PLAUSIBLE:
        for name, content in indexes.items():  # rebuilt ones were written back
            assert (partition_dir(root) / name).read_bytes() == content, name
    with Log.open(root) as log:  # and the next opening trusts them
        partition = log.partition(TOPIC, 0)
        assert not partition.recovery_notes
        assert _answers(partition, workload, count) == answers
