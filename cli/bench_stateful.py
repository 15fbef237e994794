"""``streamer bench stateful``: a keyed count, a windowed count and a table's recovery, in
streamer and quixstreams.

The workloads (the apps are in :mod:`streamer.cli.bench_stateful_apps`):

count     500,000 JSON page views keyed by user (1,000 users, ``--keys``), 4 partitions; a
          count per user in a RocksDB-backed table, and the new count sent to an output topic
          for every event: one output per input event on both frameworks, the same work
count-eos the same count exactly once: streamer's ``processing_guarantee="exactly_once"``,
          quixstreams' ``"exactly-once"``: outputs, changelog and offsets committed together
          in transactions
window     the same events, whose record timestamps rise evenly over 1,000 s; a count per user
          in 10-second tumbling windows of event time, grace 0, each window sent once when it
          closes (final emit): about 100 windows per user
recovery  streamer alone: a table whose changelog holds 1,000,000 keys (``--recovery-keys``)
          and whose state folder is empty; the worker rebuilds it before processing anything

each run by streamer-embedded (the log in the app's process, written beforehand with
:mod:`streamer.log`), streamer-kafka (the same app over ``kafka://``) and quixstreams, the
last two against their own fresh ``streamer broker``, loaded beforehand with confluent-kafka.

Measured as ``streamer bench pipeline`` does (:mod:`streamer.cli.bench_pipeline`): every
framework reads the same prebuilt events in the same partitions (Kafka's murmur2 of the key),
with the same timestamps; its child process imports its framework and builds its app, says
``start`` and runs. **Completion**, for count and window: every expected output is in the
output topic's high watermark (visible to a consumer), watched every 20 ms with ListOffsets by
this process, or every 5 ms by streamer-embedded itself; for count-eos, whose outputs become
visible only when their transaction commits (and whose markers take offsets of their own),
the group's committed offsets covering every input event, as the same transactions commit
them (OffsetFetch every 20 ms; streamer-embedded reads its own group every 5 ms). Count
expects one output per event; window one per (user, window) that closes, computed here
from the input with the rule both frameworks follow
(:meth:`~streamer.cli.bench_stateful_events.Events.closed_windows`: a window closes when its
partition's largest event time reaches its end; the last window of each partition stays
open and is not expected; quixstreams runs with ``closing_strategy="partition"`` to close
windows that way). **Correctness**, after the app and broker stopped, from the log's files:
count's output holds, for each user with N events, the counts 1 … N exactly once (so the
table counted every event once; count-eos's output is read as ``read_committed`` reads it:
no markers, nothing aborted); window's output holds each closed window once with its exact
count and bounds; otherwise the run fails. For recovery
the app watches its table in-process: done when every partition is restored and served; then
(untimed) it reads the whole table back: exactly the changelog's keys, each with its value.

events/s = input events / seconds from ``start`` to done, keys/s likewise for recovery; the
medians over ``--runs``, and the ratios to quixstreams beside the issue's goals:
streamer-embedded ≥ 3×, streamer-kafka ≥ 1.5× on count, count-eos and window; recovery ≥
300,000 keys/s; and count-eos over count for each framework (exactly-once within 15% of
at-least-once: ≥ 0.85).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from streamer.cli import bench_harness as harness
from streamer.cli.bench_stateful_apps import (
    EXACTLY_ONCE,
    FRAMEWORKS,
    WORKLOADS,
    ChildSettings,
    output_topic,
)
from streamer.cli.bench_stateful_events import (
    APP_ID,
    EVENT_TIME_SPAN_MS,
    INPUT_TOPIC,
    PARTITIONS,
    WINDOW_MS,
    Changelog,
    Events,
    RunFailed,
    build_changelog,
    build_events,
    check_counts,
    check_windows,
    load_broker,
    load_changelog_broker,
    load_changelog_log,
    load_log,
    read_committed_topic,
    read_topic,
)
from streamer.cli.broker_process import RunningBroker

__all__ = ["parse_only", "run_stateful_benchmark"]

GOALS = {"streamer-embedded": 3.0, "streamer-kafka": 1.5}  # × quixstreams, count and window
EXACTLY_ONCE_GOAL = 0.85  # count-eos over count, per framework: within 15%
RECOVERY_GOAL_KEYS_S = 300_000
REFERENCE = "quixstreams"
CHECK_S_MAX = 300.0  # recovery: the app reading its whole table back, after the clock


# -- the runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # start → every output visible (recovery: every partition restored)
    first_output_s: float | None  # start → the first output visible
    durable_s: float | None  # start → every output fsynced; streamer-embedded only
    restore_s: float | None  # recovery: the worker's own restore time (its log line)
    app_cpu_seconds: float | None  # the app's process, start → done, from /proc
    broker_cpu_seconds: float | None  # `streamer broker`'s, likewise


@dataclass(slots=True)
class Measurement(harness.Runs):  # type: ignore[misc]  # mypy sees streamer.cli as Any
    workload: str  # items: its input events; for recovery, the table's keys
    framework: str

    @property
    def unit(self) -> str:
        return "keys/s" if self.workload == "recovery" else "events/s"

    def summary(self) -> dict[str, Any]:
        return {"workload": self.workload, "framework": self.framework, "unit": self.unit,
                "items": self.items, "outputs": self.outputs, **self.figures("per_s", Sample)}


@dataclass(slots=True)
class Inputs:
    events: Events
    event_count: int
    changelog: Changelog | None
    recovery_keys: int


def _plan(workloads: Sequence[str], frameworks: Sequence[str]) -> list[tuple[str, str]]:
    """(workload, framework) pairs: recovery is streamer's alone."""
    return [(w, f) for w in workloads for f in frameworks
            if not (w == "recovery" and f == REFERENCE)]


def _run_all(
    plan: Sequence[tuple[str, str]], inputs: Inputs, runs: int, root: str,
    profile_dir: str | None, notes: list[str], progress: Console,
) -> dict[tuple[str, str], Measurement]:
    measurements: dict[tuple[str, str], Measurement] = {}
    for workload, framework in plan:
        if workload == "recovery":
            items = outputs = inputs.recovery_keys
        else:
            items = inputs.event_count
            outputs = (len(inputs.events.closed_windows(items)) if workload == "window"
                       else items)
        measurements[(workload, framework)] = Measurement(items, outputs, workload, framework)
    for run in range(1, runs + 1):
        for m in measurements.values():  # they take turns, so drift spreads over all
            _run_one(m, inputs, run, root, profile_dir, notes, progress)
    return measurements


def _run_one(
    m: Measurement, inputs: Inputs, run: int, root: str, profile_dir: str | None,
    notes: list[str], progress: Console,
) -> None:
    folder = tempfile.mkdtemp(prefix=f"{m.workload}-{m.framework}-{run}-", dir=root)
    label = f"run {run}: {m.workload}, {m.framework}, {m.items:,} " + (
        "keys" if m.workload == "recovery" else "events")
    topic = output_topic(m.workload)
    profile = None if profile_dir is None else os.path.join(
        profile_dir, f"{m.workload}-{m.framework}-run{run}.prof")

    def measure(bootstrap: str, broker: RunningBroker | None) -> Sample:
        settings = ChildSettings(m.framework, m.workload, bootstrap, topic, PARTITIONS,
                                 m.outputs, folder, profile)
        return _measure(settings, broker, os.path.join(folder, f"{m.framework}.log"), notes,
                        label)

    def check(data: str) -> None:
        if m.workload == "count":
            check_counts(read_topic(data, topic), inputs.events.counts(m.items))
        elif m.workload in EXACTLY_ONCE:
            check_counts(read_committed_topic(data, topic), inputs.events.counts(m.items))
        elif m.workload == "window":
            check_windows(read_topic(data, topic), inputs.events.closed_windows(m.items))

    harness.run_on_fresh_log(
        m, run, label, folder, embedded=m.framework == "streamer-embedded",
        load=lambda bootstrap, into_broker: _load(m.workload, inputs, bootstrap,
                                                  into_broker=into_broker),
        measure=measure, check=check, describe=lambda sample: _describe(m, sample),
        notes=notes, progress=progress,
    )


def _load(workload: str, inputs: Inputs, destination: str, *, into_broker: bool) -> None:
    """The run's input, before its clock, into a log folder or a broker (host:port): the
    events and the output topic, or the recovery's changelog."""
    topic = output_topic(workload)
    if workload == "recovery":
        assert inputs.changelog is not None
        if into_broker:
            load_changelog_broker(destination, inputs.changelog)
        else:
            load_changelog_log(destination, inputs.changelog)
    elif into_broker:
        load_broker(destination, inputs.events, inputs.event_count, topic)
    else:
        load_log(destination, inputs.events, inputs.event_count, topic)


def _measure(
    settings: ChildSettings, broker: RunningBroker | None, log_path: str, notes: list[str],
    label: str,
) -> Sample:
    child = harness.Child(settings, log_path, "streamer.cli.bench_stateful_apps")
    first: float | None = None
    durable: float | None = None
    restore: float | None = None
    try:
        start = child.wait_for("start", harness.START_S_MAX)
        cpu_start = child.cpu_seconds()
        broker_start = None if broker is None else broker.cpu_seconds()
        if settings.workload == "recovery" or broker is None:  # the app watches itself
            done = child.wait_for("done", harness.RUN_S_MAX)
        elif settings.workload in EXACTLY_ONCE:
            first, done = harness.watch_committed(broker.bootstrap, APP_ID, INPUT_TOPIC,
                                                  PARTITIONS, settings.expected, child)
        else:
            first, done = harness.watch_broker(broker.bootstrap, settings.output_topic,
                                               settings.expected, child)
        cpu_done = child.cpu_seconds()
        broker_done = None if broker is None else broker.cpu_seconds()
        if settings.workload == "recovery":
            restore = _check_recovery(child, settings.expected)
        elif broker is None:
            first = child.wait_for("first", harness.START_S_MAX)  # said before "done"
            durable = child.wait_for("durable", harness.STALL_S_MAX) - start
    finally:
        stopping = "durable" in child.said or "checked" in child.said
        if not child.stop(exiting=stopping):
            notes.append(f"{label}: the app needed SIGKILL to stop")
    return Sample(
        done - start, None if first is None else first - start, durable, restore,
        harness.difference(cpu_start, cpu_done), harness.difference(broker_start, broker_done),
    )


def _check_recovery(child: harness.Child, keys: int) -> float | None:
    """The app's own check of its table; returns the worker's restore seconds."""
    recovered = child.said["recovered"]
    if recovered != keys:
        raise RunFailed(f"restored {recovered} changelog records, not {keys}")
    child.wait_for("checked", CHECK_S_MAX)
    if child.said.get("problem"):
        raise RunFailed(child.said["problem"])
    restores = child.said.get("restores") or []
    return sum(seconds for _, seconds in restores) if restores else None


def _describe(m: Measurement, s: Sample) -> str:
    text = f"{m.items / s.seconds:,.0f} {m.unit} ({s.seconds:.2f} s"
    if s.first_output_s is not None:
        text += f"; first output after {s.first_output_s:.2f} s"
    if s.durable_s is not None:
        text += f"; all durable after {s.durable_s:.2f} s"
    if s.restore_s is not None:
        text += f"; the worker's restore {s.restore_s:.2f} s"
    return text + ")"


# -- the command ---------------------------------------------------------------------------


def run_stateful_benchmark(
    *,
    workloads: Sequence[str],
    frameworks: Sequence[str],
    events: int,
    keys: int,
    recovery_keys: int,
    runs: int,
    data_dir: str | None,
    profile_dir: str | None,
    json_path: str | None,
    console: Console,
) -> dict[str, Any]:
    """Run the stateful benchmark, print a table on ``console`` and return the figures;
    ``json_path``: also write them there as JSON ("-": print JSON on ``console`` instead of
    the table). The report's ``failures`` counts the runs that failed; the caller decides the
    exit code."""
    as_json = json_path == "-"
    plan = _plan(workloads, frameworks)
    _check_settings(plan, events, keys, recovery_keys, runs)
    session = harness.Session.begin(console, as_json=as_json, data_dir=data_dir,
                                    profile_dir=profile_dir)
    notes: list[str] = []
    try:
        needs_changelog = any(w == "recovery" for w, _ in plan)
        session.progress.print(f"[dim]building {events:,} events" + (
            f" and a changelog of {recovery_keys:,} keys" if needs_changelog else "")
            + " (not timed)…[/]")
        inputs = Inputs(build_events(events, keys), events,
                        build_changelog(recovery_keys) if needs_changelog else None,
                        recovery_keys)
        measurements = _run_all(plan, inputs, runs, session.root, session.profile_dir, notes,
                                session.progress)
    finally:
        session.close()
    report: dict[str, Any] = session.report(
        "streamer bench stateful",
        {"events_per_s": "input events per second, start → every output visible",
         "keys_per_s": "table keys per second, start → every partition restored"},
        _settings(workloads, frameworks, events, keys, recovery_keys, runs, session.root,
                  session.remove_root),
        [m.summary() for m in measurements.values()], _ratios(measurements), notes)
    harness.show_report(console, report, json_path=json_path, print_table=_print_table)
    return report


def parse_only(only: str | None) -> tuple[list[str], list[str]]:
    """``--only`` → (workloads, frameworks): see :func:`.bench_harness.parse_only`."""
    found: tuple[list[str], list[str]] = harness.parse_only(only, WORKLOADS, FRAMEWORKS)
    return found


def _check_settings(
    plan: Sequence[tuple[str, str]], events: int, keys: int, recovery_keys: int, runs: int,
) -> None:
    if runs < 1 or events < 2 or keys < 1 or recovery_keys < 1:
        raise SystemExit("--runs, --keys and --recovery-keys must be ≥ 1, --events ≥ 2")
    if not plan:
        raise SystemExit("nothing to run: recovery is measured for streamer only")
    needed = {}
    if any(framework != "streamer-embedded" for _, framework in plan):
        needed["confluent_kafka"] = "confluent-kafka"
    if any(framework == "quixstreams" for _, framework in plan):
        needed["quixstreams"] = "quixstreams"
    missing = [package for module, package in needed.items() if not harness.importable(module)]
    if missing:
        raise SystemExit(f"the stateful benchmark needs {', '.join(missing)}: "
                         "pip install streamer[bench]")


def _settings(
    workloads: Sequence[str], frameworks: Sequence[str], events: int, keys: int,
    recovery_keys: int, runs: int, root: str, remove_root: bool,
) -> dict[str, Any]:
    versions = harness.package_versions(
        ("quixstreams", "confluent-kafka", "rocksdict", "aiokafka", "orjson"))
    return {
        "workloads": list(workloads),
        "frameworks": list(frameworks),
        "events": events,
        "keys": keys,
        "partitions": PARTITIONS,
        "event_time_span_ms": EVENT_TIME_SPAN_MS,
        "window": f"tumbling {WINDOW_MS // 1000} s, grace 0, final emit; a window closes when "
                  "its partition's largest event time reaches its end",
        "recovery_keys": recovery_keys,
        "example_event": {"user": "u123", "page": "/p/42", "duration_ms": 1234, "n": 0},
        "runs": runs,
        "data_dir": root,
        "data_dir_removed": remove_root,
        "versions": versions,
    }


def _ratios(measurements: dict[tuple[str, str], Measurement]) -> list[dict[str, Any]]:
    ratios = []
    for (workload, framework), m in measurements.items():
        if workload == "recovery":
            ours = m.median_rate()
            ratios.append({
                "workload": workload, "framework": framework, "over": "goal",
                "ratio": None if ours is None else round(ours / RECOVERY_GOAL_KEYS_S, 3),
                "goal": 1.0, "goal_keys_per_s": RECOVERY_GOAL_KEYS_S,
            })
            continue
        at_least_once = measurements.get(("count", framework))
        if workload in EXACTLY_ONCE and at_least_once is not None:
            ratios.append({
                "workload": workload, "framework": framework, "over": "count",
                "ratio": harness.ratio_of(m.median_rate(), at_least_once.median_rate()),
                "goal": EXACTLY_ONCE_GOAL,
            })
        reference = measurements.get((workload, REFERENCE))
        if framework == REFERENCE or reference is None:
            continue
        ours, theirs = m.median_rate(), reference.median_rate()
        ratios.append({
            "workload": workload, "framework": framework, "over": REFERENCE,
            "ratio": harness.ratio_of(ours, theirs),
            "goal": GOALS.get(framework),
        })
    return ratios


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    table = harness.report_table(
        "streamer bench stateful: input events/s (recovery: keys/s), start → done",
        ("workload", "framework", "per s", "min–max", "app s", "brk s", "runs", "ratio", "goal",
         "÷count", "goal"),
        left=2)
    ratios = {(r["workload"], r["framework"], r["over"] == "count"): r for r in report["ratios"]}
    for m in report["measurements"]:
        where = (m["workload"], m["framework"])
        table.add_row(*_row(m, ratios.get((*where, False)), ratios.get((*where, True))))
    console.print(table)
    _print_caption(console, report)


def _row(m: dict[str, Any], ratio: dict[str, Any] | None,
         over_count: dict[str, Any] | None) -> list[str]:
    """``ratio``: over quixstreams (recovery: over its goal); ``over_count``: count-eos
    over the same framework's count."""
    first = [m["workload"], m["framework"]]
    if m["per_s_median"] is None:
        return [*first, "n/a", "", "", "", harness.runs_text(m), "", "", "", ""]
    ratio_text, goal_text = harness.ratio_texts(ratio)
    if ratio_text and ratio is not None and ratio["over"] == "goal":
        goal_text = f"≥{harness.short(ratio['goal_keys_per_s'])}/s"
    low, high = m["per_s_min"], m["per_s_max"]
    return [
        *first, f"{m['per_s_median']:,}", _range(low, high),
        harness.median_text(m["app_cpu_seconds"]), harness.median_text(m["broker_cpu_seconds"]),
        harness.runs_text(m), ratio_text, goal_text, *harness.ratio_texts(over_count),
    ]


def _range(low: int, high: int) -> str:
    """``38–41k``, ``0.95–1.20M``: the unit once, when both ends share it."""
    if high < 1e3:
        return f"{low}–{high}"
    low_text, high_text = harness.short(low), harness.short(high)
    if low_text[-1] == high_text[-1]:
        low_text = low_text[:-1]
    return f"{low_text}–{high_text}"


def _print_caption(console: Console, report: dict[str, Any]) -> None:
    settings, machine = report["settings"], report["machine"]
    versions = settings["versions"]
    recovery = (f"recovery: a table of {settings['recovery_keys']:,} keys restored from its "
                "changelog into empty stores. " if "recovery" in settings["workloads"] else "")
    console.print(
        f"[dim]Medians of {settings['runs']} runs. {settings['events']:,} JSON events, "
        f"{settings['keys']:,} keys, {settings['partitions']} partitions, event times over "
        f"{settings['event_time_span_ms'] / 1000:,.0f} s. count: a per-key count in a RocksDB "
        "table, (user, count) sent per event; count-eos: the same, exactly once "
        "(transactions; done when the committed input offsets cover every event, the output "
        "read back read_committed); window: per-key counts in 10 s tumbling "
        f"windows, sent once closed; {recovery}Each run a fresh log: streamer-embedded's "
        "folder, the others' own `streamer broker`, loaded before the clock; the clock runs "
        "from the app's start (imports done; start-up and group join included) to every "
        "output in the high watermark (recovery: every table partition restored), and the "
        "output is then checked exactly. "
        f"quixstreams {versions.get('quixstreams', '?')}, confluent-kafka "
        f"{versions.get('confluent-kafka', '?')}, rocksdict {versions.get('rocksdict', '?')}. "
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) shared by app, broker and harness, "
        f"load {machine['load_average_1_5_15'][0]:.2f} before, Python {machine['python']}, "
        f"{machine['filesystem']} on {machine['device']}. app s, brk s: CPU seconds of the "
        "app's process and of its broker, start → done; ratio: the median over quixstreams' "
        "median (recovery: over the goal); ÷count: count-eos's median over the same "
        "framework's count.[/]",
        highlight=False,
    )
    for m in report["measurements"]:
        durable = [s for s in m["durable_seconds"] if s is not None]
        restore = [s for s in m["restore_seconds"] if s is not None]
        if durable:
            console.print(
                f"[dim]{m['workload']}, {m['framework']}: every output durable (fsynced) "
                f"after a median {statistics.median(durable):.2f} s: "
                f"{m['items'] / statistics.median(durable):,.0f} events/s on that clock.[/]",
                highlight=False,
            )
        if restore:
            console.print(
                f"[dim]{m['workload']}, {m['framework']}: the worker's own restore (its log "
                f"line, start-up excluded) took a median {statistics.median(restore):.2f} s: "
                f"{m['items'] / statistics.median(restore):,.0f} keys/s.[/]", highlight=False,
            )
    harness.print_notes_and_failures(console, report,
                                     lambda m: f"{m['workload']}, {m['framework']}")
