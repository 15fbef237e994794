"""``streamer bench log``: the storage engine's throughput, in-process.

Record batches are built beforehand with aiokafka's codec (not timed), then appended to and
read from :mod:`streamer.log` on this machine's disk. Each measurement is repeated ``runs``
times, on a fresh topic of one partition, and timed with :func:`time.perf_counter`:

a. append with OS flushing: ``flush.ms=-1``, one batch per ``append`` call, no fsync.
   Beside it, ``os.writev`` of the same batches to a plain file, with no engine: the floor
   that Python and the kernel set on this machine.
b. append with an fsync per MiB: ``flush.ms=-1`` and ``flush()`` after every MiB appended
   and at the end, against ``dd if=/dev/zero bs=1M conv=fdatasync`` writing as many MiB into
   the same folder, once per run, in the same invocation.
c. append with the default ``flush.ms=0``: durable before ``append`` returns, one fsync per
   batch. It is slow by nature, so it writes at most 128 MiB per run.
d. read from the page cache: the partition written in (a), from offset 0, in
   ``read(offset, max_bytes=1 MiB)`` calls; ``read`` checks the CRC-32C of every batch.

A warm-up as large as a run, not reported, comes first. MB means 10^6 bytes, MiB 2^20 bytes.
The figures are figures: nothing passes or fails; ratios to the goals and to dd are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from rich import box
from rich.console import Console
from rich.table import Table
from streamer.log import FLUSH_BY_OS, Log, PartitionLog

__all__ = ["Batches", "Measurement", "build_batches", "run_log_benchmark"]

MB = 1_000_000
MIB = 1 << 20
GOAL_APPEND_MB_S = 1000.0  # (a): 1 GB/s
GOAL_READ_MB_S = 2000.0  # (d): 2 GB/s
GOAL_DD_RATIO = 0.70  # (b): 70 % of dd
FSYNC_EACH_APPEND_MIB_MAX = 128  # (c) waits for one fsync per batch: keep it short
# Distinct prebuilt batches, cycled: more than the CPU caches hold, so the CRC and the
# kernel's copy read memory as they would for fresh data, not a hot 16 KiB buffer.
POOL_BYTES_MAX = 32 * MIB
KEY_BYTES = 16
VALUE_BYTES = 74  # with the record's framing, about 100 bytes per record
_DD_SECONDS = re.compile(r"copied, ([0-9.]+) s")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class Batches:
    """Prebuilt v2 record batches, all of one size and record count."""

    pool: list[bytes]
    batch_bytes: int  # the real size of each batch
    records_per_batch: int
    record_bytes: float  # average bytes per record inside a batch, framing included


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # wall clock, perf_counter
    user: float  # CPU seconds of this process, from os.times()
    system: float


@dataclass(slots=True)
class Measurement:
    key: str  # a short name, for JSON and for ``versus``
    label: str  # the table's row label
    name: str  # the full description
    mib_per_run: float
    bytes_per_run: int = 0
    records_per_run: int = 0
    goal: str = ""
    goal_mb_s: float | None = None  # ratio = median / goal_mb_s
    versus: str | None = None  # ratio = median / that measurement's median
    samples: list[Sample] = field(default_factory=list)

    def mb_s(self) -> list[float]:
        return [self.bytes_per_run / s.seconds / MB for s in self.samples]

    def last_mb_s(self) -> str:
        return f"{self.mb_s()[-1]:,.0f}" if self.samples else "n/a"

    def summary(self, others: dict[str, Measurement]) -> dict[str, Any]:
        mb_s = self.mb_s()
        records_s = [self.records_per_run / s.seconds for s in self.samples]
        ratio = None
        other = others.get(self.versus or "")
        if mb_s and self.goal_mb_s:
            ratio = statistics.median(mb_s) / self.goal_mb_s
        elif mb_s and other is not None and other.samples:
            ratio = statistics.median(mb_s) / statistics.median(other.mb_s())
        return {
            "key": self.key,
            "label": self.label,
            "name": self.name,
            "mib_per_run": self.mib_per_run,
            "bytes_per_run": self.bytes_per_run,
            "records_per_run": self.records_per_run,
            "runs": len(self.samples),
            "seconds": [round(s.seconds, 6) for s in self.samples],
            "cpu_user_seconds": [round(s.user, 3) for s in self.samples],
            "cpu_system_seconds": [round(s.system, 3) for s in self.samples],
            "mb_per_s": _spread(mb_s),
            "records_per_s": _spread(records_s) if self.records_per_run else None,
            "goal": self.goal,
            "ratio": None if ratio is None else round(ratio, 3),
            "ratio_of": "goal" if self.goal_mb_s else self.versus,
        }


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def _timed(body: Callable[[], object]) -> Sample:
    before, start = os.times(), time.perf_counter()
    body()
    seconds, after = time.perf_counter() - start, os.times()
    return Sample(seconds, after.user - before.user, after.system - before.system)


# -- batches ------------------------------------------------------------------------------


def build_batches(batch_bytes: int, pool_bytes: int = POOL_BYTES_MAX, seed: int = 1) -> Batches:
    """Distinct uncompressed batches of at most ``batch_bytes`` each (but at least one
    record), of ~100-byte records. Every batch holds as many records, so all are one size."""
    rng = random.Random(seed)
    timestamp_ms = time.time_ns() // 1_000_000
    probe = _builder()
    records = 0
    key, value = b"k" * KEY_BYTES, b"v" * VALUE_BYTES
    while not records or probe.size() + probe.size_in_bytes(
        records, 0, key, value, []
    ) <= batch_bytes:
        probe.append(records, timestamp=timestamp_ms, key=key, value=value, headers=[])
        records += 1
    pool = []
    for n in range(max(1, min(pool_bytes // max(batch_bytes, 1), 4096))):
        builder = _builder()
        for i in range(records):
            key = b"key-%012d" % (n * records + i)
            builder.append(
                i, timestamp=timestamp_ms, key=key, value=rng.randbytes(VALUE_BYTES), headers=[]
            )
        pool.append(bytes(builder.build()))
    size = len(pool[0])
    if any(len(batch) != size for batch in pool):
        raise RuntimeError("the prebuilt batches differ in size")
    return Batches(pool, size, records, (size - 61) / records)


def _builder() -> DefaultRecordBatchBuilder:
    return DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=1 << 30,
    )


def _count_for(mib: float, batches: Batches) -> int:
    """Whole batches that fit in ``mib`` MiB (at least one). Rounding down keeps a 1024 MiB
    run inside one default 1 GiB segment: a roll fsyncs the closed segment in ``append``."""
    return max(1, int(mib * MIB) // batches.batch_bytes)


# -- what is timed -------------------------------------------------------------------------


def _append(partition: PartitionLog, batches: Batches, count: int, fsync_every: int) -> None:
    """Append ``count`` batches, cycling the pool; with ``fsync_every`` > 0, ``flush()``
    after every ``fsync_every`` bytes appended and at the end."""
    pool = batches.pool
    size = len(pool)
    append = partition.append
    if fsync_every <= 0:
        for i in range(count):
            append(pool[i % size])
        return
    flush = partition.flush
    pending = 0
    for i in range(count):
        append(pool[i % size])
        pending += batches.batch_bytes
        if pending >= fsync_every:
            flush()
            pending = 0
    flush()


def _writev(path: str, batches: Batches, count: int) -> Sample:
    """The floor under (a): the same batches written as the log writes them (a 16-byte
    prefix and the rest, one ``os.writev`` per batch) to a plain file, with no engine."""
    pool = batches.pool
    size = len(pool)
    prefix = bytes(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    try:

        def body() -> None:
            for i in range(count):
                os.writev(fd, (prefix, memoryview(pool[i % size])[16:]))

        sample = _timed(body)
        os.fdatasync(fd)  # not timed, as the engine's runs are fsynced when deleted
    finally:
        os.close(fd)
        os.remove(path)
    return sample


def _read_all(partition: PartitionLog, max_bytes: int = MIB) -> tuple[Sample, int, int]:
    """Read the whole partition from its start. Returns the sample, bytes and records."""
    read = partition.read
    end_offset = partition.log_end_offset
    first = partition.log_start_offset
    state = [first, 0]  # next offset, bytes read

    def body() -> None:
        offset, total = first, 0
        while offset < end_offset:
            records = read(offset, max_bytes).records
            size = len(records)
            if not size:
                break
            last = 0  # walk the batch lengths to the last batch, then read its header
            while True:
                length = _INT32.unpack_from(records, last + 8)[0] + 12
                if last + length >= size:
                    break
                last += length
            base_offset = _INT64.unpack_from(records, last)[0]
            offset = base_offset + _INT32.unpack_from(records, last + 23)[0] + 1
            total += size
        state[:] = [offset, total]

    sample = _timed(body)
    if state[0] != end_offset:
        raise RuntimeError(f"read stopped at offset {state[0]}; the log ends at {end_offset}")
    return sample, state[1], state[0] - first


def _dd(path: str, mib: int) -> Sample | None:
    """dd writing ``mib`` MiB of zeros to ``path`` and fdatasyncing them: dd's own time
    (our clock around the process when dd does not say); None when there is no dd."""
    dd = shutil.which("dd")
    if dd is None:
        return None
    command = [dd, "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}", "conv=fdatasync"]
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}, check=False
    )
    seconds = time.perf_counter() - start
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    if done.returncode != 0:
        raise RuntimeError(f"dd failed: {done.stderr.strip()}")
    found = _DD_SECONDS.search(done.stderr)
    # dd's CPU time is a child's, not this process's: it is not recorded.
    return Sample(float(found.group(1)) if found else seconds, 0.0, 0.0)


def _on_new_topic(
    log: Log, name: str, config: dict[str, Any], body: Callable[[PartitionLog], Sample]
) -> Sample:
    """Run ``body`` on partition 0 of a new topic, then delete the topic (not timed; it
    fsyncs what the OS had not written yet)."""
    log.create_topic(name, 1, config)
    try:
        return body(log.partition(name, 0))
    finally:
        log.delete_topic(name)


# -- the command ---------------------------------------------------------------------------


def run_log_benchmark(
    *,
    data_dir: str | None,
    batch_bytes: int,
    total_mib: int,
    runs: int,
    as_json: bool,
    console: Console,
) -> dict[str, Any]:
    """Run the log benchmark, print a table (or JSON) on ``console``, return the figures."""
    if batch_bytes < 128 or total_mib < 1 or runs < 1:
        raise SystemExit("--batch-bytes must be ≥ 128, --total-mib ≥ 1 and --runs ≥ 1")
    progress = Console(stderr=True) if as_json else console
    root, remove_root = _data_folder(data_dir)
    started = datetime.now(UTC)
    machine = _machine(root)  # before the runs: the load average says who else was busy
    source = _source()
    try:
        progress.print(f"[dim]building batches of ≤ {batch_bytes} bytes (not timed)…[/]")
        batches = build_batches(batch_bytes, min(POOL_BYTES_MAX, total_mib * MIB))
        fsync_mib = min(total_mib, FSYNC_EACH_APPEND_MIB_MAX)
        results, warmup = _measure(root, batches, total_mib, fsync_mib, runs, progress)
    finally:
        if remove_root:
            shutil.rmtree(root, ignore_errors=True)
    by_key = {m.key: m for m in results}
    report = {
        "benchmark": "streamer bench log",
        "date": started.isoformat(timespec="seconds"),
        "units": {"MB": "10^6 bytes", "MiB": "2^20 bytes"},
        "machine": machine,
        "source": source,
        "settings": {
            "data_dir": root,
            "data_dir_removed": remove_root,
            "batch_bytes": batches.batch_bytes,
            "records_per_batch": batches.records_per_batch,
            "record_bytes": round(batches.record_bytes, 1),
            "distinct_batches": len(batches.pool),
            "total_mib": total_mib,
            "fsync_each_append_mib": fsync_mib,
            "runs": runs,
        },
        "warmup": {"mib": total_mib, "append_mb_per_s": round(warmup, 1)},
        "measurements": [m.summary(by_key) for m in results],
    }
    if as_json:
        console.print_json(json.dumps(report))
    else:
        _print_table(console, report)
    return report


def _data_folder(data_dir: str | None) -> tuple[str, bool]:
    """The folder to write in and whether to remove it afterwards.

    Without ``--data``: a new folder in the system's temporary folder when that is on a
    disk, else in the current folder (a tmpfs /tmp would measure memory, not the disk).
    """
    if data_dir is not None:
        os.makedirs(data_dir, exist_ok=True)
        return os.path.abspath(data_dir), False
    parent = tempfile.gettempdir()
    if _filesystem(parent)[1] in ("tmpfs", "ramfs"):
        parent = os.getcwd()
    return tempfile.mkdtemp(prefix="streamer-bench-", dir=parent), True


def _measure(
    root: str, batches: Batches, total_mib: int, fsync_mib: int, runs: int, progress: Console
) -> tuple[list[Measurement], float]:
    append_os = Measurement(
        "append_os", "a append, OS flush", "append, OS flushing (flush.ms=-1)",
        total_mib, goal="≥ 1 GB/s", goal_mb_s=GOAL_APPEND_MB_S,
    )
    writev = Measurement(
        "writev_floor", "  os.writev floor",
        "os.writev of the same batches to a plain file, one call per batch, no engine",
        total_mib, goal="reference",
    )
    append_mib = Measurement(
        "append_fsync_per_mib", "b append, fsync/MiB",
        "append, fsync per MiB (flush.ms=-1, flush() after every MiB and at the end)",
        total_mib, goal="≥ 70% dd", versus="dd",
    )
    dd = Measurement(
        "dd", "  dd, same folder", "dd if=/dev/zero bs=1M conv=fdatasync, same folder",
        total_mib, goal="reference",
    )
    append_sync = Measurement(
        "append_fsync_per_append", "c append, fsync each",
        "append, fsync per append (flush.ms=0, the default)", fsync_mib, goal="default",
    )
    read = Measurement(
        "read", "d read, page cache",
        "read from the page cache, read(offset, 1 MiB) in a loop, CRC-32C checked",
        total_mib, goal="≥ 2 GB/s", goal_mb_s=GOAL_READ_MB_S,
    )
    count = _count_for(total_mib, batches)
    count_sync = _count_for(fsync_mib, batches)
    for m, n in ((append_os, count), (writev, count), (append_mib, count), (read, count),
                 (append_sync, count_sync)):
        m.bytes_per_run = n * batches.batch_bytes
        m.records_per_run = n * batches.records_per_batch
    dd.bytes_per_run = total_mib * MIB
    # Topic names unique to this invocation: --data may hold an interrupted run's topics.
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    size_limit = {"max.message.bytes": max(1_048_588, batches.batch_bytes)}
    os_flush = {"flush.ms": FLUSH_BY_OS, **size_limit}
    with Log.open(root) as log:
        # Warm-up, as large as a run and not reported: imports, the allocator, and on a VM
        # the first touch of guest memory by the page cache (see docs/benchmarks.md).
        warmup = _on_new_topic(
            log, f"{prefix}-warmup", os_flush,
            lambda p: _timed(lambda: _append(p, batches, count, 0)),
        )
        progress.print(
            f"[dim]warm-up: append {append_os.bytes_per_run / warmup.seconds / MB:,.0f} MB/s "
            "(not reported)[/]"
        )
        for run in range(1, runs + 1):

            def append_then_read(partition: PartitionLog) -> Sample:
                sample = _timed(lambda: _append(partition, batches, count, 0))
                read_sample, read_bytes, read_records = _read_all(partition)
                if (read_bytes, read_records) != (read.bytes_per_run, read.records_per_run):
                    raise RuntimeError(f"read back {read_bytes} bytes, {read_records} records")
                read.samples.append(read_sample)
                return sample

            append_os.samples.append(
                _on_new_topic(log, f"{prefix}-{run}-os", os_flush, append_then_read)
            )
            writev.samples.append(_writev(os.path.join(root, f"writev-{run}.bin"), batches, count))
            append_mib.samples.append(_on_new_topic(
                log, f"{prefix}-{run}-mib", os_flush,
                lambda p: _timed(lambda: _append(p, batches, count, MIB)),
            ))
            dd_sample = _dd(os.path.join(root, f"dd-{run}.bin"), total_mib)
            if dd_sample is not None:
                dd.samples.append(dd_sample)
            append_sync.samples.append(_on_new_topic(
                log, f"{prefix}-{run}-sync", size_limit,
                lambda p: _timed(lambda: _append(p, batches, count_sync, 0)),
            ))
            progress.print(
                f"[dim]run {run}/{runs}: append {append_os.last_mb_s()} "
                f"(writev {writev.last_mb_s()}) · read {read.last_mb_s()} · "
                f"fsync/MiB {append_mib.last_mb_s()} (dd {dd.last_mb_s()}) · "
                f"fsync/append {append_sync.last_mb_s()} MB/s[/]",
                highlight=False,
            )
    warmup_mb_s = append_os.bytes_per_run / warmup.seconds / MB
    return [append_os, writev, append_mib, dd, append_sync, read], warmup_mb_s


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    settings = report["settings"]
    machine = report["machine"]
    table = Table(
        title="streamer bench log: MB/s (MB = 10^6 bytes), records/s",
        title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
    )
    table.add_column("measurement", no_wrap=True)
    for name in ("min", "median", "max"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("rec/s", justify="right", no_wrap=True)
    table.add_column("goal", no_wrap=True)
    table.add_column("ratio", justify="right", no_wrap=True)
    for m in report["measurements"]:
        mb_s = m["mb_per_s"]
        records_s = m["records_per_s"]
        table.add_row(
            m["label"],
            *(f"{mb_s[k]:,.0f}" if mb_s else "n/a" for k in ("min", "median", "max")),
            f"{records_s['median'] / 1e6:.2f}M" if records_s else "",
            m["goal"],
            _ratio_text(m),
        )
    console.print(table)
    for m in report["measurements"]:
        console.print(
            f"[dim]{m['label'][:2]} {m['name']}; {m['mib_per_run']:g} MiB per run[/]",
            highlight=False,
        )
    console.print(
        f"[dim]{settings['runs']} runs of each after a warm-up, a fresh topic of one partition "
        f"per run; {settings['batch_bytes']}-byte batches of {settings['records_per_batch']} "
        f"records (~{settings['record_bytes']:.0f} bytes each), built beforehand (not timed), "
        "one batch per append; rec/s is the median; ratio = median / goal, or median / dd's "
        f"median. {machine['cpus']} CPUs ({machine['cpu_model']}), load "
        f"{machine['load_average_1_5_15'][0]:.2f} before, Python {machine['python']}, "
        f"{machine['filesystem']} on {machine['device']}: {settings['data_dir']}"
        f"{' (removed)' if settings['data_dir_removed'] else ''}.[/]",
        highlight=False,
    )


def _ratio_text(m: dict[str, Any]) -> str:
    ratio = m["ratio"]
    if ratio is None:
        return ""
    target = GOAL_DD_RATIO if m["ratio_of"] == "dd" else 1.0
    colour = "green" if ratio >= target else "red"
    label = " dd" if m["ratio_of"] == "dd" else ""
    return f"[{colour}]{ratio:.0%}{label}[/]"


def _machine(path: str) -> dict[str, Any]:
    device, filesystem = _filesystem(path)
    memory_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(memory_kib / (1 << 20), 1),
        "device": device,
        "filesystem": filesystem,
        "kernel": platform.release(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


SOURCE_FOLDERS = ("streamer", "log", "state", "operators", "cli")  # the package's code


def _source() -> dict[str, Any]:
    """streamer's version, and its git commit when it runs from a checkout, with the code
    files changed since (call it before the runs: the code they measure)."""
    import streamer

    found: dict[str, Any] = {"version": streamer.__version__}
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = shutil.which("git")
    if git is None or not os.path.exists(os.path.join(folder, ".git")):
        return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            [git, "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            [git, "-C", folder, "status", "--porcelain", "--", *SOURCE_FOLDERS],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        found["commit"] = commit
        found["uncommitted_changes"] = sorted(
            line[3:] for line in changed if line.strip() and line[3:] != "cli/bench.py"
        )
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _filesystem(path: str) -> tuple[str, str]:
    """(device, filesystem type) of the mount holding ``path``, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("", "unknown", "unknown")
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount_point, kind = line.split()[:3]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, device, kind)
    return best[1], best[2]
