"""What ``streamer bench pipeline`` and ``streamer bench stateful`` share: the app's child
process (:class:`Child`), the broker watches (:func:`watch_broker`, and
:func:`watch_committed` for exactly-once apps), one run on a fresh log
(:func:`run_on_fresh_log`) and bits of the report; :func:`print_notes_and_failures` serves
``streamer bench broker`` too."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from streamer.cli.bench import _data_folder, _machine, _source
from streamer.cli.bench_pipeline_apps import MARK
from streamer.cli.bench_pipeline_events import RunFailed, end_offsets
from streamer.cli.broker_process import (
    BrokerDidNotStart,
    RunningBroker,
    _process_cpu_seconds,
    start_broker,
    stop_broker,
)

__all__ = [
    "CHILD_STOP_S_MAX", "RUN_S_MAX", "STALL_S_MAX", "START_S_MAX", "WATCH_INTERVAL_S", "Child",
    "Runs", "Session",
    "difference", "importable", "kafka_error", "median_text", "package_versions",
    "print_notes_and_failures", "ratio_of", "ratio_texts", "report_table", "run_on_fresh_log",
    "runs_text", "sample_figures", "short", "show_report", "watch_broker", "watch_committed",
]

WATCH_INTERVAL_S = 0.02  # ListOffsets of the output topic, while a broker app runs
START_S_MAX = 120.0  # a child's imports and app set-up, before it says "start"
STALL_S_MAX = 60.0  # no new output for this long: the run fails
RUN_S_MAX = 3600.0
CHILD_STOP_S_MAX = 30.0  # SIGTERM, then SIGKILL


# -- an app's process ----------------------------------------------------------------------


class Child:
    """An app's process, ``python -m module SETTINGS_JSON``: its marked stdout lines on a
    queue, everything in a log file."""

    def __init__(self, settings: Any, log_path: str, module: str) -> None:
        self.log_path = log_path
        self.said: dict[str, Any] = {}
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", module, settings.to_json()],
                cwd=settings.state_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,),
                                        daemon=True)
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        with open(self.log_path, "ab") as log, stdout:
            for line in stdout:
                log.write(line)
                log.flush()
                text = line.decode(errors="replace")
                if text.startswith(MARK):
                    self._lines.put(json.loads(text[len(MARK):]))

    def wait_for(self, what: str, timeout_s: float) -> float:
        """The monotonic time of the child's ``what`` line; RunFailed if it fails first."""
        deadline = time.monotonic() + timeout_s
        while what not in self.said:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"no {what!r} from the pipeline in {timeout_s:.0f} s")
            with contextlib.suppress(queue.Empty):
                self.said.update(self._lines.get(timeout=0.1))
            if "failed" in self.said:
                raise RunFailed(f"{self.said['failed']}{self.tail()}")
        return float(self.said[what])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            self._reader.join(timeout=1.0)
            raise RunFailed(f"the pipeline's process exited with {code}{self.tail()}")

    def cpu_seconds(self) -> float | None:
        seconds: float | None = _process_cpu_seconds(self.process.pid)
        return seconds

    def stop(self, *, exiting: bool = False) -> bool:
        """SIGTERM, then SIGKILL after CHILD_STOP_S_MAX. True when SIGTERM was enough.
        ``exiting``: the child is stopping by itself; give it CHILD_STOP_S_MAX first."""
        stopped = True
        if exiting:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(CHILD_STOP_S_MAX)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(CHILD_STOP_S_MAX)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                stopped = False
        self._reader.join(timeout=5.0)
        return stopped

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as log:
            last = log.read().splitlines()[-lines:]
            if last:
                return ":\n  " + "\n  ".join(last)
        return ""


def watch_broker(bootstrap: str, topic: str, expected: int, child: Child) -> tuple[float, float]:
    """Poll ``topic``'s end offsets until they hold ``expected`` records; returns the
    monotonic times of the first output and the last."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    first_at: float | None = None
    last, progress_at = 0, time.monotonic()
    while True:
        outputs = end_offsets(admin, topic)
        now = time.monotonic()
        if outputs != last:
            last, progress_at = outputs, now
            first_at = first_at or now
        if outputs >= expected:
            assert first_at is not None
            return first_at, now
        if now - progress_at > STALL_S_MAX:
            raise RunFailed(f"{outputs} of {expected} outputs, none new in {STALL_S_MAX:.0f} s"
                            f"{child.tail()}")
        child.check_alive()
        time.sleep(WATCH_INTERVAL_S)


def watch_committed(
    bootstrap: str, group: str, topic: str, partitions: int, expected: int, child: Child,
) -> tuple[float, float]:
    """Poll ``group``'s committed offsets of ``topic`` until they cover ``expected`` input
    events (an exactly-once app: its outputs are visible once the transaction that commits
    those offsets has committed); returns the monotonic times of the first move and the
    last."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    request = [ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)])]
    first_at: float | None = None
    last, progress_at = 0, time.monotonic()
    while True:
        found = admin.list_consumer_group_offsets(request)[group].result()
        committed = sum(max(tp.offset, 0) for tp in found.topic_partitions)
        now = time.monotonic()
        if committed != last:
            last, progress_at = committed, now
            first_at = first_at or now
        if committed >= expected:
            assert first_at is not None
            return first_at, now
        if now - progress_at > STALL_S_MAX:
            raise RunFailed(f"{committed} of {expected} input offsets committed, none new in "
                            f"{STALL_S_MAX:.0f} s{child.tail()}")
        child.check_alive()
        time.sleep(WATCH_INTERVAL_S)


# -- the runs ------------------------------------------------------------------------------


@dataclass(slots=True)
class Runs:
    """An app's runs: the ``items`` it processes in each (input events, or a table's keys),
    the ``outputs`` it must send, a sample per run that passed, a line per run that failed."""

    items: int
    outputs: int
    samples: list[Any] = field(default_factory=list, kw_only=True)
    failures: list[str] = field(default_factory=list, kw_only=True)

    def rates(self) -> list[float]:
        return [self.items / s.seconds for s in self.samples]

    def median_rate(self) -> float | None:
        rates = self.rates()
        return statistics.median(rates) if rates else None

    def figures(self, rate: str, sample_type: type) -> dict[str, Any]:
        """For the report: the runs, the ``{rate}_median``, ``_min`` and ``_max`` rates, the
        samples' figures (:func:`sample_figures`), the failures."""
        rates, median = self.rates(), self.median_rate()
        return {
            "runs": len(self.samples),
            f"{rate}_median": None if median is None else round(median),
            f"{rate}_min": round(min(rates)) if rates else None,
            f"{rate}_max": round(max(rates)) if rates else None,
            **sample_figures(sample_type, self.samples),
            "failures": self.failures,
        }


def run_on_fresh_log(
    m: Runs, run: int, label: str, folder: str, *, embedded: bool,
    load: Callable[[str, bool], None], measure: Callable[[str, RunningBroker | None], Any],
    check: Callable[[str], None], describe: Callable[[Any], str], notes: list[str],
    progress: Console,
) -> None:
    """One run on a log of its own in ``folder``, removed after: streamer-embedded's folder,
    or a fresh ``streamer broker``. ``load(bootstrap, into_broker)`` fills it before the
    clock (bootstrap: the folder, or the broker's host:port), ``measure(bootstrap, broker)``
    times the app and returns its sample, ``check(data)`` reads the output back from the
    log's files once every process stopped. The sample goes to ``m.samples``, or the
    failure to ``m.failures``; a line on ``progress`` either way."""
    broker: RunningBroker | None = None
    try:
        if embedded:
            data = bootstrap = os.path.join(folder, "log")
        else:
            data = os.path.join(folder, "broker-data")
            broker = start_broker("streamer", data, os.path.join(folder, "broker.log"))
            bootstrap = broker.bootstrap
        load(bootstrap, broker is not None)
        sample = measure(bootstrap, broker)
        if broker is not None and not stop_broker(broker):
            notes.append(f"{label}: streamer broker needed SIGKILL")
        check(data)
        m.samples.append(sample)
        progress.print(f"[dim]{label}: {describe(sample)}[/]", highlight=False)
    except (RunFailed, BrokerDidNotStart, kafka_error()) as failure:
        m.failures.append(f"run {run}: {failure}")
        progress.print(f"[red]{label}: failed: {failure}[/]", highlight=False)
    finally:
        if broker is not None:
            stop_broker(broker)
        shutil.rmtree(folder, ignore_errors=True)


def kafka_error() -> type[Exception]:
    """confluent-kafka's error type; streamer-embedded alone runs without confluent-kafka."""
    error: type[Exception] = RunFailed
    with contextlib.suppress(ImportError):
        from confluent_kafka import KafkaException

        error = KafkaException
    return error


def difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    if module in sys.modules:  # faust, once imported, leaves its __spec__ None
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return True


# -- the invocation and its report ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """One invocation of a benchmark: where its progress goes (stderr under ``--json``), its
    data folder (removed by :meth:`close` when it made it), its profiles' folder, when it
    started, and the machine as it was before the runs (the load average says who else was
    busy)."""

    progress: Console
    root: str
    remove_root: bool
    profile_dir: str | None
    started: datetime
    machine: dict[str, Any]
    source: dict[str, Any]  # the code measured: as it was when the runs began

    @classmethod
    def begin(cls, console: Console, *, as_json: bool, data_dir: str | None,
              profile_dir: str | None) -> Session:
        progress = Console(stderr=True) if as_json else console
        root, remove_root = _data_folder(data_dir)
        if profile_dir is not None:
            os.makedirs(profile_dir, exist_ok=True)
            profile_dir = os.path.abspath(profile_dir)
        started = datetime.now(UTC)
        return cls(progress, root, remove_root, profile_dir, started, _machine(root),
                   _source())

    def close(self) -> None:
        if self.remove_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def report(
        self, benchmark: str, units: dict[str, str], settings: dict[str, Any],
        measurements: list[dict[str, Any]], ratios: list[dict[str, Any]], notes: list[str],
    ) -> dict[str, Any]:
        """The figures, with a note when the runs were profiled."""
        if self.profile_dir is not None:
            notes.append(f"profiled with cProfile (slower than usual): {self.profile_dir}")
        return {
            "benchmark": benchmark,
            "date": self.started.isoformat(timespec="seconds"),
            "units": units,
            "machine": self.machine,
            "source": self.source,
            "settings": settings,
            "measurements": measurements,
            "ratios": ratios,
            "failures": sum(len(m["failures"]) for m in measurements),
            "notes": notes,
        }


def show_report(
    console: Console, report: dict[str, Any], *, json_path: str | None,
    print_table: Callable[[Console, dict[str, Any]], None],
) -> None:
    """The report as a table on ``console``, and as JSON in ``json_path`` if given; with
    ``json_path`` "-", as JSON on ``console`` instead of the table."""
    if json_path == "-":
        console.print_json(json.dumps(report))
        return
    print_table(console, report)
    if json_path is not None:
        with open(json_path, "w") as file:
            json.dump(report, file, indent=2)
            file.write("\n")


def parse_only(only: str | None, workloads: Sequence[str], frameworks: Sequence[str]
               ) -> tuple[list[str], list[str]]:
    """``--only count,streamer-embedded`` → (workloads, frameworks), each in the benchmark's
    order; a list naming no workload means all of them, likewise for frameworks."""
    if only is None:
        return list(workloads), list(frameworks)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(workloads) - set(frameworks))
    if unknown or not names:
        raise SystemExit(f"--only takes a list of {', '.join([*workloads, *frameworks])}; "
                         f"not {unknown}")
    return ([w for w in workloads if w in names] or list(workloads),
            [f for f in frameworks if f in names] or list(frameworks))


# -- the report ----------------------------------------------------------------------------


def sample_figures(sample_type: type, samples: Sequence[Any]) -> dict[str, list[float | None]]:
    """Each field of the samples (a dataclass of seconds) as a list over the runs, in the
    dataclass's order: ``x_s`` named ``x_seconds``; CPU seconds to 3 digits, the rest 4."""
    figures: dict[str, list[float | None]] = {}
    for f in dataclasses.fields(sample_type):
        digits = 3 if f.name.endswith("cpu_seconds") else 4
        values = [getattr(s, f.name) for s in samples]
        figures[f.name.removesuffix("_s") + ("_seconds" if f.name.endswith("_s") else "")] = [
            None if v is None else round(v, digits) for v in values]
    return figures


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """The installed versions of those of ``packages`` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


def ratio_of(ours: float | None, theirs: float | None) -> float | None:
    return None if not ours or not theirs else round(ours / theirs, 3)


def report_table(title: str, columns: Sequence[str], left: int) -> Table:
    """The report's table, with ``columns``: the first ``left`` of them to the left."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0,
                  show_edge=False)
    for n, name in enumerate(columns):
        justify: JustifyMethod = "left" if n < left else "right"
        table.add_column(name, justify=justify, no_wrap=True)
    return table


def runs_text(m: dict[str, Any]) -> str:
    """A measurement's runs; red, as passed/all, when some failed."""
    runs = m["runs"] + len(m["failures"])
    return f"[red]{m['runs']}/{runs}[/]" if m["failures"] else f"{runs}"


def ratio_texts(ratio: dict[str, Any] | None) -> tuple[str, str]:
    """A ratio's text (green when it reaches its goal, red when not, dim without one) and
    its goal's, ``≥N×``; both empty without a ratio."""
    if ratio is None or ratio["ratio"] is None:
        return "", ""
    goal = ratio["goal"]
    colour = "dim" if goal is None else "green" if ratio["ratio"] >= goal else "red"
    return f"[{colour}]{ratio['ratio']:.2f}×[/]", "" if goal is None else f"≥{goal:g}×"


def median_text(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "–"


def short(count: float) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.1f}k" if count < 1e4 else f"{count / 1e3:.0f}k"


def print_notes_and_failures(
    console: Console, report: dict[str, Any], name: Callable[[dict[str, Any]], str],
) -> None:
    """The report's notes, then each measurement's failures under ``name(measurement)``."""
    for note in report["notes"]:
        console.print(f"[yellow]note: {note}[/]", highlight=False)
    for m in report["measurements"]:
        for failure in m["failures"]:
            console.print(f"[red]{name(m)}: {failure}[/]", highlight=False)
