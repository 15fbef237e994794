"""``streamer bench joins``: a stream enriched from a table and a windowed stream-stream join,
in streamer and quixstreams.

The workloads (apps in :mod:`streamer.cli.bench_joins_apps`, inputs in
:mod:`streamer.cli.bench_joins_events`):

stream-table   500,000 orders (``--events``) keyed by customer, each enriched with its
               customer from a 100,000-key table (``--customers``) kept from the customers
               topic; every order comes out once, with its customer. Measured: the join
               phase; the table is loaded first by the same app, which then stops (its load
               time is reported apart)
stream-stream  250,000 impressions and 250,000 clicks (``--events`` in all) of 10,000 ads
               (``--keys``), each click within ± 2.5 s of its impression, joined within
               ± 5 s (grace 1 h, longer than the input spans): every impression comes out
               once, with its click

each run by streamer-embedded (the log in the app's process, written beforehand with
:mod:`streamer.log`), streamer-kafka (the same app over ``kafka://``) and quixstreams 3 (its
as-of join for the table, its interval join for the streams), the last two against their own
fresh ``streamer broker``, loaded beforehand with confluent-kafka.

Measured as ``streamer bench stateful`` does: the same prebuilt records in the same
partitions with the same timestamps for every framework; the clock runs from the child's
``start`` (imports done) until every expected output is in the output topic's high watermark;
after the processes stopped the output is read back from the log's files and checked
exactly (each order once with its customer's record; each impression once with its own
click), or the run fails. events/s = input events of the timed phase (orders; impressions
plus clicks) / seconds; medians over ``--runs``, ratios to quixstreams beside the goal
(streamer-embedded ≥ 2×).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from streamer.cli import bench_harness as harness
from streamer.cli.bench_joins_apps import FRAMEWORKS, GRACE_MS, WORKLOADS, ChildSettings
from streamer.cli.bench_joins_events import (
    APP_ID,
    ENRICHED_TOPIC,
    PAIRS_TOPIC,
    PARTITIONS,
    WITHIN_MS,
    Records,
    RunFailed,
    build_orders,
    build_pairs,
    check_enriched,
    check_pairs,
    load_broker,
    load_log,
)
from streamer.cli.broker_process import RunningBroker

__all__ = ["parse_only", "run_joins_benchmark"]

GOALS = {"streamer-embedded": 2.0}  # × quixstreams
REFERENCE = "quixstreams"


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # start of the join phase → every output visible
    first_output_s: float | None  # start → the first output visible
    durable_s: float | None  # start → every output fsynced; streamer-embedded only
    load_s: float | None  # stream-table: start of the load phase → every customer loaded
    app_cpu_seconds: float | None  # the app's process in the join phase, start → done
    broker_cpu_seconds: float | None  # `streamer broker`'s, likewise


@dataclass(slots=True)
class Measurement(harness.Runs):  # type: ignore[misc]  # mypy sees streamer.cli as Any
    workload: str
    framework: str

    def summary(self) -> dict[str, Any]:
        return {"workload": self.workload, "framework": self.framework, "unit": "events/s",
                "items": self.items, "outputs": self.outputs,
                **self.figures("per_s", Sample)}


@dataclass(frozen=True, slots=True)
class Inputs:
    customers: Records
    orders: Records
    impressions: Records
    clicks: Records

    def of(self, workload: str) -> tuple[Records, Records]:
        """The records loaded before the clock (first) and the timed phase's (second)."""
        if workload == "stream-table":
            return self.customers, self.orders
        return self.impressions, self.clicks


def _run_all(
    workloads: Sequence[str], frameworks: Sequence[str], inputs: Inputs, runs: int, root: str,
    profile_dir: str | None, notes: list[str], progress: Console,
) -> dict[tuple[str, str], Measurement]:
    measurements = {}
    for workload in workloads:
        for framework in frameworks:
            if workload == "stream-table":
                items = outputs = len(inputs.orders)
            else:
                items, outputs = len(inputs.impressions) + len(inputs.clicks), len(
                    inputs.impressions)
            measurements[(workload, framework)] = Measurement(items, outputs, workload,
                                                              framework)
    for run in range(1, runs + 1):
        for m in measurements.values():  # they take turns, so drift spreads over all
            _run_one(m, inputs, run, root, profile_dir, notes, progress)
    return measurements


def _run_one(
    m: Measurement, inputs: Inputs, run: int, root: str, profile_dir: str | None,
    notes: list[str], progress: Console,
) -> None:
    folder = tempfile.mkdtemp(prefix=f"{m.workload}-{m.framework}-{run}-", dir=root)
    label = f"run {run}: {m.workload}, {m.framework}, {m.items:,} events"
    topic = ENRICHED_TOPIC if m.workload == "stream-table" else PAIRS_TOPIC
    first, second = inputs.of(m.workload)

    def load(bootstrap: str, into_broker: bool) -> None:
        load_input = load_broker if into_broker else load_log
        load_input(bootstrap, first, (first.topic, second.topic, topic))
        if m.workload == "stream-stream":  # stream-table's orders come after the table
            load_input(bootstrap, second)

    def measure(bootstrap: str, broker: RunningBroker | None) -> Sample:
        def settings(phase: str, expected: int) -> ChildSettings:
            profile = None if profile_dir is None or phase == "load" else os.path.join(
                profile_dir, f"{m.workload}-{m.framework}-run{run}.prof")
            return ChildSettings(m.framework, m.workload, phase, bootstrap, topic, PARTITIONS,
                                 expected, folder, profile)

        log_path = os.path.join(folder, f"{m.framework}.log")
        load_s = None
        if m.workload == "stream-table":
            load_s = _load_table(settings("load", len(inputs.customers)), log_path, notes,
                                 label)
            (load_broker if broker is not None else load_log)(bootstrap, inputs.orders)
        sample = _measure(settings("join", m.outputs), broker, log_path, notes, label)
        return Sample(sample.seconds, sample.first_output_s, sample.durable_s, load_s,
                      sample.app_cpu_seconds, sample.broker_cpu_seconds)

    def check(data: str) -> None:
        if m.workload == "stream-table":
            check_enriched(data, inputs.orders)
        else:
            check_pairs(data, inputs.impressions)

    harness.run_on_fresh_log(
        m, run, label, folder, embedded=m.framework == "streamer-embedded", load=load,
        measure=measure, check=check, describe=lambda sample: _describe(m, sample),
        notes=notes, progress=progress,
    )


def _load_table(settings: ChildSettings, log_path: str, notes: list[str], label: str) -> float:
    """The load phase: the app reads every customer into its table (or store) and stops,
    saving its state; returns its seconds from ``start`` to the last customer."""
    child = harness.Child(settings, log_path, "streamer.cli.bench_joins_apps")
    try:
        start = child.wait_for("start", harness.START_S_MAX)
        loaded = child.wait_for("loaded", harness.RUN_S_MAX)
    finally:
        # streamer stops by itself once loaded; quixstreams at SIGTERM, committing
        if not child.stop(exiting=settings.framework != REFERENCE):
            notes.append(f"{label}: the load phase needed SIGKILL to stop")
    if child.said.get("records") != settings.expected:
        raise RunFailed(f"the load phase read {child.said.get('records')} customers, "
                        f"not {settings.expected}")
    seconds: float = loaded - start
    return seconds


def _measure(
    settings: ChildSettings, broker: RunningBroker | None, log_path: str, notes: list[str],
    label: str,
) -> Sample:
    child = harness.Child(settings, log_path, "streamer.cli.bench_joins_apps")
    first: float | None = None
    durable: float | None = None
    try:
        start = child.wait_for("start", harness.START_S_MAX)
        cpu_start = child.cpu_seconds()
        broker_start = None if broker is None else broker.cpu_seconds()
        if broker is None:  # streamer-embedded watches its own output
            done = child.wait_for("done", harness.RUN_S_MAX)
        else:
            first, done = harness.watch_broker(broker.bootstrap, settings.output_topic,
                                               settings.expected, child)
        cpu_done = child.cpu_seconds()
        broker_done = None if broker is None else broker.cpu_seconds()
        if broker is None:
            first = child.wait_for("first", harness.START_S_MAX)  # said before "done"
            durable = child.wait_for("durable", harness.STALL_S_MAX) - start
    finally:
        if not child.stop(exiting="durable" in child.said):
            notes.append(f"{label}: the app needed SIGKILL to stop")
    return Sample(done - start, None if first is None else first - start, durable, None,
                  harness.difference(cpu_start, cpu_done),
                  harness.difference(broker_start, broker_done))


def _describe(m: Measurement, s: Sample) -> str:
    text = f"{m.items / s.seconds:,.0f} events/s ({s.seconds:.2f} s"
    if s.first_output_s is not None:
        text += f"; first output after {s.first_output_s:.2f} s"
    if s.durable_s is not None:
        text += f"; all durable after {s.durable_s:.2f} s"
    if s.load_s is not None:
        text += f"; the table loaded in {s.load_s:.2f} s before"
    return text + ")"


# -- the command ---------------------------------------------------------------------------


def run_joins_benchmark(
    *,
    workloads: Sequence[str],
    frameworks: Sequence[str],
    events: int,
    customers: int,
    keys: int,
    runs: int,
    data_dir: str | None,
    profile_dir: str | None,
    json_path: str | None,
    console: Console,
) -> dict[str, Any]:
    """Run the joins benchmark, print a table on ``console`` and return the figures;
    ``json_path``: also write them there ("-": print JSON instead of the table). The
    report's ``failures`` counts the runs that failed; the caller decides the exit code."""
    as_json = json_path == "-"
    _check_settings(frameworks, events, customers, keys, runs)
    session = harness.Session.begin(console, as_json=as_json, data_dir=data_dir,
                                    profile_dir=profile_dir)
    notes: list[str] = []
    try:
        session.progress.print(f"[dim]building {events:,} orders, {customers:,} customers, "
                               f"{events:,} impressions and clicks (not timed)…[/]")
        table, orders = build_orders(events, customers)
        impressions, clicks = build_pairs(events, keys)
        inputs = Inputs(table, orders, impressions, clicks)
        measurements = _run_all(workloads, frameworks, inputs, runs, session.root,
                                session.profile_dir, notes, session.progress)
    finally:
        session.close()
    report: dict[str, Any] = session.report(
        "streamer bench joins",
        {"events_per_s": "input events of the join phase per second, start → every output "
                         "visible"},
        _settings(workloads, frameworks, events, customers, keys, runs, session.root,
                  session.remove_root),
        [m.summary() for m in measurements.values()], _ratios(measurements), notes)
    harness.show_report(console, report, json_path=json_path, print_table=_print_table)
    return report


def parse_only(only: str | None) -> tuple[list[str], list[str]]:
    """``--only`` → (workloads, frameworks): see :func:`.bench_harness.parse_only`."""
    found: tuple[list[str], list[str]] = harness.parse_only(only, WORKLOADS, FRAMEWORKS)
    return found


def _check_settings(frameworks: Sequence[str], events: int, customers: int, keys: int,
                    runs: int) -> None:
    if runs < 1 or customers < 1 or keys < 1 or events < 2:
        raise SystemExit("--runs, --customers and --keys must be ≥ 1, --events ≥ 2")
    needed = {}
    if any(framework != "streamer-embedded" for framework in frameworks):
        needed["confluent_kafka"] = "confluent-kafka"
    if REFERENCE in frameworks:
        needed["quixstreams"] = "quixstreams"
    missing = [package for module, package in needed.items() if not harness.importable(module)]
    if missing:
        raise SystemExit(f"the joins benchmark needs {', '.join(missing)}: "
                         "pip install streamer[bench]")


def _settings(workloads: Sequence[str], frameworks: Sequence[str], events: int,
              customers: int, keys: int, runs: int, root: str, remove_root: bool
              ) -> dict[str, Any]:
    versions = harness.package_versions(
        ("quixstreams", "confluent-kafka", "rocksdict", "aiokafka", "orjson"))
    return {
        "workloads": list(workloads),
        "frameworks": list(frameworks),
        "events": events,
        "customers": customers,
        "keys": keys,
        "partitions": PARTITIONS,
        "stream_stream_window": f"± {WITHIN_MS / 1000:g} s, grace {GRACE_MS / 1000:g} s, inner",
        "stream_table": "left join, the table loaded from its topic before the clock",
        "app_id": APP_ID,
        "runs": runs,
        "data_dir": root,
        "data_dir_removed": remove_root,
        "versions": versions,
    }


def _ratios(measurements: dict[tuple[str, str], Measurement]) -> list[dict[str, Any]]:
    ratios = []
    for (workload, framework), m in measurements.items():
        reference = measurements.get((workload, REFERENCE))
        if framework == REFERENCE or reference is None:
            continue
        ratios.append({
            "workload": workload, "framework": framework, "over": REFERENCE,
            "ratio": harness.ratio_of(m.median_rate(), reference.median_rate()),
            "goal": GOALS.get(framework),
        })
    return ratios


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    table = harness.report_table(
        "streamer bench joins: input events/s of the join phase, start → every output",
        ("workload", "framework", "per s", "min–max", "load s", "app s", "brk s", "runs",
         "ratio", "goal"),
        left=2)
    ratios = {(r["workload"], r["framework"]): r for r in report["ratios"]}
    for m in report["measurements"]:
        first = [m["workload"], m["framework"]]
        if m["per_s_median"] is None:
            table.add_row(*first, "n/a", "", "", "", "", harness.runs_text(m), "", "")
            continue
        table.add_row(
            *first, f"{m['per_s_median']:,}",
            f"{harness.short(m['per_s_min'])}–{harness.short(m['per_s_max'])}",
            harness.median_text(m["load_seconds"]), harness.median_text(m["app_cpu_seconds"]),
            harness.median_text(m["broker_cpu_seconds"]), harness.runs_text(m),
            *harness.ratio_texts(ratios.get((m["workload"], m["framework"]))),
        )
    console.print(table)
    settings, machine = report["settings"], report["machine"]
    versions = settings["versions"]
    console.print(
        f"[dim]Medians of {settings['runs']} runs, {settings['partitions']} partitions. "
        f"stream-table: {settings['events']:,} orders, each enriched with its customer from a "
        f"{settings['customers']:,}-key table loaded from its topic before the clock (load s: "
        "that phase; quixstreams: join_asof with the customers topic). stream-stream: "
        f"{settings['events']:,} impressions and clicks of {settings['keys']:,} ads, joined "
        f"{settings['stream_stream_window']} (quixstreams: join_interval). Each run a fresh "
        "log: streamer-embedded's folder, the others' own `streamer broker`, loaded before "
        "the clock; the clock runs from the app's start (imports done) to every output in "
        "the high watermark, and the output is then checked exactly. quixstreams "
        f"{versions.get('quixstreams', '?')}, confluent-kafka "
        f"{versions.get('confluent-kafka', '?')}, rocksdict {versions.get('rocksdict', '?')}. "
        f"{machine['cpus']} CPUs ({machine['cpu_model']}) shared by app, broker and harness, "
        f"load {machine['load_average_1_5_15'][0]:.2f} before, Python {machine['python']}. "
        "app s, brk s: CPU seconds of the app's process and of its broker in the join phase; "
        "ratio: the median over quixstreams' median.[/]",
        highlight=False,
    )
    harness.print_notes_and_failures(console, report,
                                     lambda m: f"{m['workload']}, {m['framework']}")
