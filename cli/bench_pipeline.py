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

import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from streamer.cli.bench_harness import (
    RUN_S_MAX,
    STALL_S_MAX,
    START_S_MAX,
    Child,
    Runs,
    Session,
    difference,
    importable,
    median_text,
    package_versions,
    print_notes_and_failures,
    ratio_of,
    ratio_texts,
    report_table,
    run_on_fresh_log,
    runs_text,
    short,
    show_report,
    watch_broker,
)
from streamer.cli.bench_pipeline_apps import PIPELINES, THRESHOLD_MS, ChildSettings
from streamer.cli.bench_pipeline_events import (
    INPUT_TOPIC,
    KEYS,
    OUTPUT_TOPIC,
    PARTITIONS,
    Events,
    build_events,
    check_output,
    load_broker,
    load_log,
)
from streamer.cli.broker_process import RunningBroker

__all__ = ["importable", "parse_pipelines", "run_pipeline_benchmark"]

GOALS = {"streamer-embedded": 3.0, "streamer-kafka": 1.0}  # × quixstreams' events/s
REFERENCE = "quixstreams"


# -- the runs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # start → every output visible
    first_output_s: float  # start → the first output visible
    durable_s: float | None  # start → every output fsynced; streamer-embedded only
    app_cpu_seconds: float | None  # the pipeline's process, start → done, from /proc
    broker_cpu_seconds: float | None  # `streamer broker`'s, likewise


@dataclass(slots=True)
class Measurement(Runs):  # type: ignore[misc]  # mypy sees streamer.cli as Any
    pipeline: str  # items: its input events

    def summary(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "events": self.items, "outputs": self.outputs,
                **self.figures("events_per_s", Sample)}


@dataclass(slots=True)
class Results:
    measurements: dict[str, Measurement]
    notes: list[str] = field(default_factory=list)


def _run_all(
    pipelines: Sequence[str], events: Events, counts: dict[str, int], runs: int, root: str,
    profile_dir: str | None, progress: Console,
) -> Results:
    results = Results({
        name: Measurement(counts[name], sum(events.kept[:counts[name]]), name)
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
    label = f"run {run}: {m.pipeline}, {m.items:,} events"
    profile = None if profile_dir is None else os.path.join(
        profile_dir, f"{m.pipeline}-run{run}.prof")

    def measure(bootstrap: str, broker: RunningBroker | None) -> Sample:
        settings = ChildSettings(m.pipeline, bootstrap, INPUT_TOPIC, OUTPUT_TOPIC, PARTITIONS,
                                 m.outputs, folder, profile)
        return _measure(settings, broker, os.path.join(folder, f"{m.pipeline}.log"), results,
                        label)

    run_on_fresh_log(
        m, run, label, folder, embedded=m.pipeline == "streamer-embedded",
        load=lambda bootstrap, into_broker: (load_broker if into_broker else load_log)(
            bootstrap, events, m.items),
        measure=measure, check=lambda data: check_output(data, events.outputs(m.items)),
        describe=lambda sample: _describe(m, sample), notes=results.notes, progress=progress,
    )


def _measure(
    settings: ChildSettings, broker: RunningBroker | None, log_path: str, results: Results,
    label: str,
) -> Sample:
    child = Child(settings, log_path, "streamer.cli.bench_pipeline_apps")
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
            first, done = watch_broker(broker.bootstrap, OUTPUT_TOPIC, settings.expected, child)
            cpu_done = child.cpu_seconds()
        broker_done = None if broker is None else broker.cpu_seconds()
    finally:
        if not child.stop(exiting="durable" in child.said):
            results.notes.append(f"{label}: the pipeline needed SIGKILL to stop")
    return Sample(
        done - start, first - start, durable, difference(cpu_start, cpu_done),
        difference(broker_start, broker_done),
    )


def _describe(m: Measurement, s: Sample) -> str:
    text = (f"{m.items / s.seconds:,.0f} events/s ({s.seconds:.2f} s; first output after "
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
    session = Session.begin(console, as_json=as_json, data_dir=data_dir,
                            profile_dir=profile_dir)
    try:
        session.progress.print(f"[dim]building {events:,} events (not timed)…[/]")
        built = build_events(events)
        results = _run_all(pipelines, built, counts, runs, session.root, session.profile_dir,
                           session.progress)
    finally:
        session.close()
    if counts.get("faust", events) < events:
        results.notes.append(
            f"faust-streaming ran on the first {counts['faust']:,} events only (it manages a "
            f"few thousand events/s); its rate is over what it processed (--faust-events)")
    report: dict[str, Any] = session.report(
        "streamer bench pipeline",
        {"events_per_s": "input events per second, start → every output visible"},
        _settings(pipelines, events, counts, runs, session.root, session.remove_root),
        [m.summary() for m in results.measurements.values()], _ratios(results), results.notes)
    show_report(console, report, json_path="-" if as_json else None, print_table=_print_table)
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
    versions = package_versions(
        ("quixstreams", "faust-streaming", "aiokafka", "confluent-kafka", "orjson"))
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
            "ratio": ratio_of(ours, theirs),
            "goal": GOALS.get(name),
        })
    return ratios


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    table = report_table(
        "streamer bench pipeline: input events/s, start → every output visible",
        ("pipeline", "events", "events/s", "min–max", "1st s", "app s", "brk s", "runs",
         "÷ quix", "goal"), left=1)
    ratios = {r["pipeline"]: r for r in report["ratios"]}
    for m in report["measurements"]:
        table.add_row(*_row(m, ratios.get(m["pipeline"])))
    console.print(table)
    _print_caption(console, report)


def _row(m: dict[str, Any], ratio: dict[str, Any] | None) -> list[str]:
    first = [m["pipeline"], short(m["events"]), f"{m['events_per_s_median'] or 0:,}"]
    if m["events_per_s_median"] is None:
        return [m["pipeline"], short(m["events"]), "n/a", "", "", "", "", runs_text(m), "", ""]
    low, high = m["events_per_s_min"], m["events_per_s_max"]
    return [
        *first, f"{short(low).removesuffix('k')}–{short(high)}" if high >= 1e3 else
        f"{low}–{high}", median_text(m["first_output_seconds"]),
        median_text(m["app_cpu_seconds"]), median_text(m["broker_cpu_seconds"]), runs_text(m),
        *ratio_texts(ratio),
    ]


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
    print_notes_and_failures(console, report, lambda m: str(m["pipeline"]))
