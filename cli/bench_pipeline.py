"""``streamer bench pipeline``: one stream pipeline in streamer, quixstreams and faust.

The pipeline: JSON page views ``{"user": "u123", "page": "/p/42", "duration_ms": 1234,
"n": 0}`` keyed by user (1,000 users) in a topic of 4 partitions; decode, keep the views
with ``duration_ms ≥ 1000`` (about half), reshape, send to an output topic of 4 partitions.
The pipelines themselves are in :mod:`streamer.cli.bench_pipeline_apps`; in each run, in
turn:

streamer-embedded  the log in the app's process: the events are written into a fresh folder
                   with :mod:`streamer.log` before the app starts
streamer-kafka     the same app over the Kafka protocol; quixstreams and faust likewise,
                   each against its own fresh ``streamer broker``, loaded beforehand with
                   confluent-kafka

Every pipeline reads the same prebuilt events, in the same partitions (Kafka's murmur2 of the
key). Its child process imports its framework and builds its app, then says ``start`` and
runs; the clock runs from there until every expected output is in the output topic's high
watermark (visible to a consumer), watched every 20 ms with ListOffsets by this process, or
every 5 ms by streamer-embedded itself, whose log no other process may open. Start-up (group
join, topic checks) is inside the clock, as a user waits for it too; the time to the first
output is reported beside it. After the run the app and broker are stopped and the output
topic is read back from the log's files: exactly the expected ``n``s, each once, or the run
fails. events/s = input events / seconds; the ratios to quixstreams are printed beside the
goals (streamer-embedded ≥ 3×, streamer-kafka ≥ 1×).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from streamer.cli.bench import _data_folder, _machine, _source
from streamer.cli.bench_pipeline_apps import MARK, PIPELINES, THRESHOLD_MS, ChildSettings
from streamer.cli.bench_pipeline_events import (
    INPUT_TOPIC,
    KEYS,
    OUTPUT_TOPIC,
    PARTITIONS,
    Events,
    RunFailed,
    build_events,
    check_output,
    end_offsets,
    load_broker,
    load_log,
)
from streamer.cli.broker_process import (
    BrokerDidNotStart,
    RunningBroker,
    _process_cpu_seconds,
    start_broker,
    stop_broker,
)

__all__ = ["parse_pipelines", "run_pipeline_benchmark"]

GOALS = {"streamer-embedded": 3.0, "streamer-kafka": 1.0}  # × quixstreams' events/s
REFERENCE = "quixstreams"
WATCH_INTERVAL_S = 0.02  # ListOffsets of the output topic, while a broker pipeline runs
START_S_MAX = 120.0  # a child's imports and app set-up, before it says "start"
STALL_S_MAX = 60.0  # no new output for this long: the run fails
RUN_S_MAX = 3600.0
CHILD_STOP_S_MAX = 30.0  # SIGTERM, then SIGKILL


# -- a pipeline's process ------------------------------------------------------------------


class Child:
    """A pipeline's process: its marked stdout lines on a queue, everything in a log file."""

    def __init__(self, settings: ChildSettings, log_path: str) -> None:
        self.log_path = log_path
        self.said: dict[str, Any] = {}
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamer.cli.bench_pipeline_apps", settings.to_json()],
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


def watch_broker(bootstrap: str, expected: int, child: Child) -> tuple[float, float]:
    """Poll the output topic's end offsets until they hold ``expected`` records; returns
    the monotonic times of the first output and the last."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    first_at: float | None = None
    last, progress_at = 0, time.monotonic()
    while True:
        outputs = end_offsets(admin, OUTPUT_TOPIC)
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


# -- the runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # start → every output visible
    first_output_s: float  # start → the first output visible
    durable_s: float | None  # start → every output fsynced; streamer-embedded only
    app_cpu_seconds: float | None  # the pipeline's process, start → done, from /proc
    broker_cpu_seconds: float | None  # `streamer broker`'s, likewise


@dataclass(slots=True)
class Measurement:
    pipeline: str
    events: int
    outputs: int
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.events / s.seconds for s in self.samples]

    def median_rate(self) -> float | None:
        rates = self.rates()
        return statistics.median(rates) if rates else None

    def summary(self) -> dict[str, Any]:
        rates, median = self.rates(), self.median_rate()

        def rounded(values: Sequence[float | None], digits: int = 3) -> list[float | None]:
            return [None if v is None else round(v, digits) for v in values]

        return {
            "pipeline": self.pipeline,
            "events": self.events,
            "outputs": self.outputs,
            "runs": len(self.samples),
            "events_per_s_median": None if median is None else round(median),
            "events_per_s_min": round(min(rates)) if rates else None,
            "events_per_s_max": round(max(rates)) if rates else None,
            "seconds": rounded([s.seconds for s in self.samples], 4),
            "first_output_seconds": rounded([s.first_output_s for s in self.samples], 4),
            "durable_seconds": rounded([s.durable_s for s in self.samples], 4),
            "app_cpu_seconds": rounded([s.app_cpu_seconds for s in self.samples]),
            "broker_cpu_seconds": rounded([s.broker_cpu_seconds for s in self.samples]),
            "failures": self.failures,
        }


@dataclass(slots=True)
class Results:
    measurements: dict[str, Measurement]
    notes: list[str] = field(default_factory=list)


def _run_all(
    pipelines: Sequence[str], events: Events, counts: dict[str, int], runs: int, root: str,
    profile_dir: str | None, progress: Console,
) -> Results:
    results = Results({
        name: Measurement(name, counts[name], sum(events.kept[:counts[name]]))
        for name in pipelines
    })
    for run in range(1, runs + 1):
        for name in pipelines:  # the pipelines take turns, so drift spreads over all
            _run_one(results, results.measurements[name], events, run, root, profile_dir,
                     progress)
    return results


def _run_one(
    results: Results, m: Measurement, events: Events, run: int, root: str,
    profile_dir: str | None, progress: Console,
) -> None:
    folder = tempfile.mkdtemp(prefix=f"{m.pipeline}-{run}-", dir=root)
    label = f"run {run}: {m.pipeline}, {m.events:,} events"
    broker: RunningBroker | None = None
    try:
        if m.pipeline == "streamer-embedded":
            data = bootstrap = os.path.join(folder, "log")
            load_log(data, events, m.events)
        else:
            data = os.path.join(folder, "broker-data")
            broker = start_broker("streamer", data, os.path.join(folder, "broker.log"))
            bootstrap = broker.bootstrap
            load_broker(bootstrap, events, m.events)
        profile = None if profile_dir is None else os.path.join(
            profile_dir, f"{m.pipeline}-run{run}.prof")
        settings = ChildSettings(m.pipeline, bootstrap, INPUT_TOPIC, OUTPUT_TOPIC, PARTITIONS,
                                 m.outputs, folder, profile)
        sample = _measure(settings, broker, os.path.join(folder, f"{m.pipeline}.log"), results,
                          label)
        if broker is not None and not stop_broker(broker):
            results.notes.append(f"{label}: streamer broker needed SIGKILL")
        check_output(data, events.outputs(m.events))
        m.samples.append(sample)
        progress.print(f"[dim]{label}: {_describe(m, sample)}[/]", highlight=False)
    except (RunFailed, BrokerDidNotStart, _kafka_error()) as failure:
        m.failures.append(f"run {run}: {failure}")
        progress.print(f"[red]{label}: failed: {failure}[/]", highlight=False)
    finally:
        if broker is not None:
            stop_broker(broker)
        shutil.rmtree(folder, ignore_errors=True)


def _measure(
    settings: ChildSettings, broker: RunningBroker | None, log_path: str, results: Results,
    label: str,
) -> Sample:
    child = Child(settings, log_path)
    try:
        start = child.wait_for("start", START_S_MAX)
        cpu_start = child.cpu_seconds()
        broker_start = None if broker is None else broker.cpu_seconds()
        durable: float | None = None
        if broker is None:  # streamer-embedded watches itself
            done = child.wait_for("done", RUN_S_MAX)
            cpu_done = child.cpu_seconds()
            first = child.wait_for("first", START_S_MAX)  # said before "done"
            durable = child.wait_for("durable", STALL_S_MAX) - start
        else:
            first, done = watch_broker(broker.bootstrap, settings.expected, child)
            cpu_done = child.cpu_seconds()
        broker_done = None if broker is None else broker.cpu_seconds()
    finally:
        if not child.stop(exiting="durable" in child.said):
            results.notes.append(f"{label}: the pipeline needed SIGKILL to stop")
    return Sample(
        done - start, first - start, durable, _difference(cpu_start, cpu_done),
        _difference(broker_start, broker_done),
    )


def _kafka_error() -> type[Exception]:
    """confluent-kafka's error type; streamer-embedded alone runs without confluent-kafka."""
    error: type[Exception] = RunFailed
    with contextlib.suppress(ImportError):
        from confluent_kafka import KafkaException

        error = KafkaException
    return error


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _describe(m: Measurement, s: Sample) -> str:
    text = (f"{m.events / s.seconds:,.0f} events/s ({s.seconds:.2f} s; first output after "
            f"{s.first_output_s:.2f} s")
    if s.durable_s is not None:
        text += f"; all durable after {s.durable_s:.2f} s"
    return text + ")"


# -- the command ---------------------------------------------------------------------------


def run_pipeline_benchmark(
    *,
    pipelines: Sequence[str],
    events: int,
    faust_events: int,
    runs: int,
    data_dir: str | None,
    profile_dir: str | None,
    as_json: bool,
    console: Console,
) -> dict[str, Any]:
    """Run the pipeline benchmark, print a table (or JSON) on ``console``, return the figures.
    The report's ``failures`` counts the runs that failed; the caller decides the exit code."""
    counts = {name: min(events, faust_events) if name == "faust" else events
              for name in pipelines}
    _check_settings(pipelines, counts, runs)
    progress = Console(stderr=True) if as_json else console
    root, remove_root = _data_folder(data_dir)
    if profile_dir is not None:
        os.makedirs(profile_dir, exist_ok=True)
        profile_dir = os.path.abspath(profile_dir)
    started = datetime.now(UTC)
    machine = _machine(root)  # before the runs: the load average says who else was busy
    try:
        progress.print(f"[dim]building {events:,} events (not timed)…[/]")
        built = build_events(events)
        results = _run_all(pipelines, built, counts, runs, root, profile_dir, progress)
    finally:
        if remove_root:
            shutil.rmtree(root, ignore_errors=True)
    if counts.get("faust", events) < events:
        results.notes.append(
            f"faust-streaming ran on the first {counts['faust']:,} events only (it manages a "
            f"few thousand events/s); its rate is over what it processed (--faust-events)")
    if profile_dir is not None:
        results.notes.append(f"profiled with cProfile (slower than usual): {profile_dir}")
    measurements = [m.summary() for m in results.measurements.values()]
    report = {
        "benchmark": "streamer bench pipeline",
        "date": started.isoformat(timespec="seconds"),
        "units": {"events_per_s": "input events per second, start → every output visible"},
        "machine": machine,
        "source": _source(),
        "settings": _settings(pipelines, events, counts, runs, root, remove_root),
        "measurements": measurements,
        "ratios": _ratios(results),
        "failures": sum(len(m["failures"]) for m in measurements),
        "notes": results.notes,
    }
    if as_json:
        console.print_json(json.dumps(report))
    else:
        _print_table(console, report)
    return report


def parse_pipelines(only: str | None) -> list[str]:
    """``--only streamer-embedded,quixstreams`` → those, in the benchmark's order."""
    if only is None:
        return list(PIPELINES)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PIPELINES))
    if unknown or not names:
        raise SystemExit(f"--only takes a list of {', '.join(PIPELINES)}; not {unknown}")
    return [name for name in PIPELINES if name in names]


def importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    if module in sys.modules:  # faust, once imported, leaves its __spec__ None
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:
        return True


def _check_settings(pipelines: Sequence[str], counts: dict[str, int], runs: int) -> None:
    if runs < 1 or any(count < 2 for count in counts.values()):
        raise SystemExit("--runs must be ≥ 1, --events and --faust-events ≥ 2")
    needed = {}
    if any(name != "streamer-embedded" for name in pipelines):
        needed["confluent_kafka"] = "confluent-kafka"
    if "quixstreams" in pipelines:
        needed["quixstreams"] = "quixstreams"
    if "faust" in pipelines:
        needed["faust"] = "faust-streaming"
    missing = [package for module, package in needed.items() if not importable(module)]
    if missing:
        raise SystemExit(f"the pipeline benchmark needs {', '.join(missing)}: "
                         "pip install streamer[bench]")


def _settings(
    pipelines: Sequence[str], events: int, counts: dict[str, int], runs: int, root: str,
    remove_root: bool,
) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for package in ("quixstreams", "faust-streaming", "aiokafka", "confluent-kafka", "orjson"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {
        "pipelines": list(pipelines),
        "events": events,
        "events_per_pipeline": counts,
        "keys": KEYS,
        "partitions": PARTITIONS,
        "filter": f"duration_ms >= {THRESHOLD_MS} (durations uniform in 0–{2 * THRESHOLD_MS - 1})",
        "example_event": {"user": "u123", "page": "/p/42", "duration_ms": 1234, "n": 0},
        "runs": runs,
        "data_dir": root,
        "data_dir_removed": remove_root,
        "versions": versions,
    }


def _ratios(results: Results) -> list[dict[str, Any]]:
    reference = results.measurements.get(REFERENCE)
    theirs = None if reference is None else reference.median_rate()
    ratios = []
    for name, m in results.measurements.items():
        if name == REFERENCE or reference is None:
            continue
        ours = m.median_rate()
        ratios.append({
            "pipeline": name,
            "over": REFERENCE,
            "ratio": None if not ours or not theirs else round(ours / theirs, 3),
            "goal": GOALS.get(name),
        })
    return ratios


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    table = Table(
        title="streamer bench pipeline: input events/s, start → every output visible",
        title_justify="left", box=box.SIMPLE_HEAD, padding=0, show_edge=False,
    )
    for name in ("pipeline", "events", "events/s", "min–max", "1st s", "app s", "brk s", "runs",
                 "÷ quix", "goal"):
        justify: JustifyMethod = "left" if name == "pipeline" else "right"
        table.add_column(name, justify=justify, no_wrap=True)
    ratios = {r["pipeline"]: r for r in report["ratios"]}
    for m in report["measurements"]:
        table.add_row(*_row(m, ratios.get(m["pipeline"])))
    console.print(table)
    _print_caption(console, report)


def _row(m: dict[str, Any], ratio: dict[str, Any] | None) -> list[str]:
    runs = m["runs"] + len(m["failures"])
    first = [m["pipeline"], _short(m["events"]), f"{m['events_per_s_median'] or 0:,}"]
    runs_text = f"[red]{m['runs']}/{runs}[/]" if m["failures"] else f"{runs}"
    if m["events_per_s_median"] is None:
        return [m["pipeline"], _short(m["events"]), "n/a", "", "", "", "", runs_text, "", ""]
    ratio_text = goal_text = ""
    if ratio is not None and ratio["ratio"] is not None:
        goal = ratio["goal"]
        colour = "dim" if goal is None else "green" if ratio["ratio"] >= goal else "red"
        ratio_text = f"[{colour}]{ratio['ratio']:.2f}×[/]"
        goal_text = "" if goal is None else f"≥{goal:g}×"
    low, high = m["events_per_s_min"], m["events_per_s_max"]
    return [
        *first, f"{_short(low).removesuffix('k')}–{_short(high)}" if high >= 1e3 else
        f"{low}–{high}", _median_text(m["first_output_seconds"]),
        _median_text(m["app_cpu_seconds"]), _median_text(m["broker_cpu_seconds"]), runs_text,
        ratio_text, goal_text,
    ]


def _median_text(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.2f}" if known else "–"


def _short(count: float) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.1f}k" if count < 1e4 else f"{count / 1e3:.0f}k"


def _print_caption(console: Console, report: dict[str, Any]) -> None:
    settings, machine = report["settings"], report["machine"]
    versions = settings["versions"]
    durable = [m for m in report["measurements"] if any(m["durable_seconds"])]
    console.print(
        f"[dim]Medians of {settings['runs']} runs. {settings['events']:,} JSON events, "
        f"{settings['keys']:,} keys, {settings['partitions']} partitions; keep "
        f"{settings['filter']}, reshape, send to a topic of {settings['partitions']} "
        "partitions. Each run a fresh log: streamer-embedded's folder, the others' own "
        "`streamer broker`, loaded before the clock; the clock runs from the app's start "
        "(imports done; start-up and group join included) to every output in the high "
        "watermark, and the output is then read back and checked. quixstreams "
        f"{versions.get('quixstreams', '?')}, faust-streaming "
        f"{versions.get('faust-streaming', '?')}, aiokafka {versions.get('aiokafka', '?')}, "
        f"confluent-kafka {versions.get('confluent-kafka', '?')}. {machine['cpus']} CPUs "
        f"({machine['cpu_model']}) shared by app, broker and harness, load "
        f"{machine['load_average_1_5_15'][0]:.2f} before, Python {machine['python']}, "
        f"{machine['filesystem']} on {machine['device']}. 1st s: seconds to the first output; "
        "app s, brk s: CPU seconds of the pipeline's process and of its broker, start → done; "
        f"÷ quix: the median over quixstreams' median.[/]",
        highlight=False,
    )
    for m in durable:
        seconds = [s for s in m["durable_seconds"] if s is not None]
        console.print(
            f"[dim]{m['pipeline']}: every output durable (fsynced) after a median "
            f"{statistics.median(seconds):.2f} s: {m['events'] / statistics.median(seconds):,.0f}"
            " events/s on that clock.[/]", highlight=False,
        )
    for note in report["notes"]:
        console.print(f"[yellow]note: {note}[/]", highlight=False)
    for m in report["measurements"]:
        for failure in m["failures"]:
            console.print(f"[red]{m['pipeline']}: {failure}[/]", highlight=False)
