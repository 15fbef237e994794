"""Shared by the fault tests and by ``appender.py`` (which imports it as a top-level module).

- :class:`Workload`: a deterministic stream of batches, so a killed writer and its checker
  agree on every byte of batch ``i`` without talking to each other;
- :func:`make_batch` / :func:`split_stored` / :func:`stored_batches`: building batches and
  reading them back whole;
- :class:`CrashingFilesystem`: a MemoryFilesystem that "loses power" at its Nth mutation.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from pathlib import Path

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from streamer.log import Log, MemoryFilesystem, PartitionLog
from streamer.log.batch import HEADER_BYTES, parse_header
from streamer.log.fs import Buffer, FileHandle

TOPIC = "faults"
BASE_TIMESTAMP_MS = 1_700_000_000_000
PRODUCER_IDS = (7001, 7002)
# Small segments so that rolls (fsync, index files, snapshot, checkpoint) happen often.
KILL_TOPIC_CONFIG = {
    "segment.bytes": 64 * 1024,
    "index.interval.bytes": 1024,
    "retention.ms": -1,
}

Record = tuple[bytes | None, bytes | None, int]  # key, value, timestamp


def make_batch(
    records: Sequence[Record],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    offset_deltas: Sequence[int] | None = None,
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 30,
    )
    for delta, (key, value, timestamp) in enumerate(records):
        if offset_deltas is not None:
            delta = offset_deltas[delta]
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=[])
    return bytes(builder.build())


class Workload:
    """Batch ``i`` of a reproducible stream; its content depends only on ``(seed, i)``.

    About 60% of the batches come from one of two idempotent producers, whose sequence
    numbers run on from their earlier batches; the rest are plain batches. Sizes vary from
    a few bytes to ~20 KiB so that rolls land at varied points.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._counts: list[int] = []
        self._bases: list[int] = [0]  # _bases[i] = base offset of batch i
        self._producers: list[tuple[int, int]] = []  # (producer id, base sequence)
        self._next_sequence = dict.fromkeys(PRODUCER_IDS, 0)
        self._cache: dict[int, bytes] = {}

    def _rng(self, index: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + index)

    def _extend(self, index: int) -> None:
        while len(self._counts) <= index:
            i = len(self._counts)
            rng = self._rng(i)
            count = rng.randint(20, 60) if rng.random() < 0.05 else rng.randint(1, 8)
            if rng.random() < 0.6:
                producer_id = rng.choice(PRODUCER_IDS)
                sequence = self._next_sequence[producer_id]
                self._next_sequence[producer_id] = sequence + count
            else:
                producer_id, sequence = -1, -1
            self._counts.append(count)
            self._producers.append((producer_id, sequence))
            self._bases.append(self._bases[-1] + count)

    def base_offset(self, index: int) -> int:
        self._extend(index)
        return self._bases[index]

    def next_offset(self, index: int) -> int:
        self._extend(index)
        return self._bases[index + 1]

    def is_idempotent(self, index: int) -> bool:
        self._extend(index)
        return self._producers[index][0] >= 0

    def producer_of(self, index: int) -> int:
        self._extend(index)
        return self._producers[index][0]

    def index_of(self, base_offset: int) -> int:
        """The batch whose base offset is ``base_offset``; ValueError if none is."""
        while self._bases[-1] <= base_offset:
            self._extend(len(self._counts) + 64)
        index = bisect.bisect_left(self._bases, base_offset)
        if self._bases[index] != base_offset:
            raise ValueError(f"no batch of the workload starts at offset {base_offset}")
        return index

    def batch(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        self._extend(index)
        rng = random.Random(f"content:{self.seed}:{index}")
        producer_id, sequence = self._producers[index]
        records: list[Record] = []
        for j in range(self._counts[index]):
            big = rng.random() < 0.02
            size = rng.randint(4096, 20_000) if big else rng.randint(0, 160)
            key = None if rng.random() < 0.1 else f"{self.seed}:{index}:{j}".encode()
            timestamp = BASE_TIMESTAMP_MS + index * 10 + j - rng.randint(0, 30)
            records.append((key, rng.randbytes(size), timestamp))
        batch = make_batch(
            records,
            producer_id=producer_id,
            producer_epoch=0 if producer_id >= 0 else -1,
            base_sequence=sequence,
        )
        self._cache[index] = batch
        return batch


# -- reading back ---------------------------------------------------------------------------


def split_stored(records: bytes) -> list[bytes]:
    """The whole batches in ``records`` (as a read returns them); fails on a partial one."""
    batches = []
    position = 0
    while position < len(records):
        assert len(records) - position >= HEADER_BYTES, "a partial batch header was returned"
        size = parse_header(records, position).batch_length + 12
        assert position + size <= len(records), "a partial batch was returned"
        batches.append(records[position : position + size])
        position += size
    return batches


def stored_batches(partition: PartitionLog, start: int | None = None) -> list[bytes]:
    """Every batch from ``start`` (default: the log start) to the log end, read whole."""
    offset = partition.log_start_offset if start is None else start
    end = partition.log_end_offset
    found: list[bytes] = []
    while offset < end:
        records = partition.read(offset).records
        assert records, f"nothing readable at offset {offset} < log end {end}"
        for batch in split_stored(records):
            header = parse_header(batch)
            if header.last_offset < offset:
                continue
            found.append(batch)
            offset = header.next_offset
    assert partition.read(end).records == b""
    return found


def assert_same_batch(stored: bytes, original: bytes, base_offset: int) -> None:
    """``stored`` is ``original`` as the log keeps it: offsets assigned, rest byte for byte."""
    header = parse_header(stored)
    assert header.base_offset == base_offset, (header.base_offset, base_offset)
    assert stored[8:12] == original[8:12], "batchLength changed"
    assert stored[16:] == original[16:], f"batch at offset {base_offset} differs"


def records_of(batch: bytes) -> list[tuple[int, bytes | None, bytes | None, int]]:
    return [
        (record.offset, record.key, record.value, record.timestamp)
        for record in DefaultRecordBatch(batch)
    ]


def flip_bit(path: str | Path, position: int, bit: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)[0]
        file.seek(position)
        file.write(bytes([byte ^ (1 << bit)]))


def abandon(log: Log) -> None:
    """Drop ``log`` as a killed process would: release its files, write nothing."""
    for partition in log._all_partitions():
        for segment in partition.segments:
            segment.close()


def write_segmented_log(
    root: str | Path, workload: Workload, config: dict[str, int], *, clean: bool
) -> int:
    """Append workload batches to a new log at ``root`` until it has four segments and six
    batches in the last; close it cleanly or :func:`abandon` it. Returns the batch count."""
    log = Log.open(root)
    log.create_topic(TOPIC, 1, config)
    partition = log.partition(TOPIC, 0)
    count = 0
    while (
        len(partition.segments) < 4 or count - workload.index_of(partition.active.base_offset) < 6
    ):
        partition.append(workload.batch(count))
        count += 1
    if clean:
        log.close()
    else:
        abandon(log)
    return count


def segment_files(directory: str | Path, suffix: str = ".log") -> list[Path]:
    return sorted(Path(directory).glob(f"*{suffix}"))


def partition_dir(root: str | Path, topic: str = TOPIC, partition: int = 0) -> Path:
    return Path(root) / "topics" / topic / str(partition)


# -- simulated power cuts -------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Raised at the chosen mutation; a BaseException so no ``except OSError`` hides it."""


class _CountingHandle:
    __slots__ = ("_fs", "_inner")

    def __init__(self, fs: CrashingFilesystem, inner: FileHandle) -> None:
        self._fs = fs
        self._inner = inner

    def append(self, parts: Sequence[Buffer]) -> None:
        if self._fs.tick("append"):
            # Half the time the bytes reach the page cache before the power goes; the
            # crash then keeps a random prefix of them.
            if self._fs.rng.random() < 0.5:
                self._inner.append(parts)
            raise SimulatedCrash("append")
        self._inner.append(parts)

    def pread(self, size: int, position: int) -> bytes:
        return self._inner.pread(size, position)

    def size(self) -> int:
        return self._inner.size()

    def truncate(self, size: int) -> None:
        self._fs.crash_if("truncate")
        self._inner.truncate(size)

    def fsync(self) -> None:
        self._fs.crash_if("fsync")
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()


class CrashingFilesystem(MemoryFilesystem):
    """A MemoryFilesystem whose ``crash_at``-th mutation raises :class:`SimulatedCrash`.

    Mutations: creating a file, append, truncate, fsync, remove, rename, fsync_dir and
    write_file_atomic. ``operations`` counts them, so a dry run tells how many points
    there are to crash at. ``crash(rng)`` then gives what a power cut leaves.
    """

    def __init__(self, crash_at: int | None = None, rng: random.Random | None = None) -> None:
        super().__init__()
        self.crash_at = crash_at
        self.rng = rng or random.Random(0)
        self.operations = 0
        self.crashed_in: str | None = None

    @classmethod
    def from_memory(
        cls, source: MemoryFilesystem, crash_at: int | None, rng: random.Random
    ) -> CrashingFilesystem:
        fs = cls(crash_at, rng)
        fs._files = source._files
        fs._dirs = source._dirs
        return fs

    def tick(self, what: str) -> bool:
        self.operations += 1
        if self.crash_at is not None and self.operations == self.crash_at:
            self.crashed_in = what
            return True
        return False

    def crash_if(self, what: str) -> None:
        if self.tick(what):
            raise SimulatedCrash(what)

    def open(self, path: str) -> FileHandle:
        if not self.exists(path):
            self.crash_if("create")
        return _CountingHandle(self, super().open(path))

    def remove(self, path: str) -> None:
        self.crash_if("remove")
        super().remove(path)

    def rename(self, source: str, target: str) -> None:
        self.crash_if("rename")
        super().rename(source, target)

    def rmtree(self, path: str) -> None:
        self.crash_if("rmtree")
        super().rmtree(path)

    def fsync_dir(self, path: str) -> None:
        self.crash_if("fsync_dir")
        super().fsync_dir(path)

    def write_file_atomic(self, path: str, data: bytes) -> None:
        self.crash_if("write_file_atomic")
        super().write_file_atomic(path, data)


# -- checking a log written with the Workload -----------------------------------------------


def check_workload_log(
    partition: PartitionLog, workload: Workload, acked: dict[int, int], *, strict: bool = False
) -> int:
    """Check that ``partition`` holds exactly batches 0..n-1 of ``workload``, intact and at
    contiguous offsets, with every acknowledged batch among them; return n.

    Then retry the last acknowledged idempotent batch, and each producer's last batch in
    the log: each must be answered as a duplicate at its original offset (the producer
    state was recovered), writing nothing. ``strict``: at most one unacknowledged batch
    follows the acknowledged ones (a writer killed mid-append), so the last acknowledged
    idempotent batch must be among the five its producer's state remembers.
    """
    damaged = [note for note in partition.recovery_notes if "damaged" in note]
    assert not damaged, damaged
    assert all(segment.corrupt_from is None for segment in partition.segments)
    batches = stored_batches(partition)
    for index, stored in enumerate(batches):
        assert_same_batch(stored, workload.batch(index), workload.base_offset(index))
    count = len(batches)
    assert partition.log_start_offset == 0
    assert partition.log_end_offset == workload.base_offset(count)
    assert partition.statistics().size_bytes == sum(len(batch) for batch in batches)
    if acked:
        assert count > max(acked), f"acknowledged batch {max(acked)} lost; log has {count}"
    for index, base_offset in acked.items():
        assert base_offset == workload.base_offset(index), (index, base_offset)
    by_producer: dict[int, list[int]] = {}
    for index in range(count):
        if workload.is_idempotent(index):
            by_producer.setdefault(workload.producer_of(index), []).append(index)
    retries = {indices[-1] for indices in by_producer.values()}
    acked_idempotent = [index for index in acked if workload.is_idempotent(index)]
    if acked_idempotent:
        last = max(acked_idempotent)
        remembered = last in by_producer[workload.producer_of(last)][-5:]
        assert remembered or not strict, f"batch {last} is not among its producer's last 5"
        if remembered:
            retries.add(last)
    for index in sorted(retries):
        result = partition.append(workload.batch(index))
        assert result.duplicate, f"retry of batch {index} was appended again"
        assert result.base_offset == workload.base_offset(index)
    assert partition.log_end_offset == workload.base_offset(count)
    return count
