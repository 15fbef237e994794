"""The input of ``streamer bench stateful``, the changelog its recovery run restores, and the
checks of what the runs wrote.

:func:`build_events` makes the page views once per invocation (seeded: every invocation reads
the same keys and values), each with an event time: the times rise evenly over
:data:`EVENT_TIME_SPAN_MS` (1,000 s) whatever the number of events, so the 10-second
tumbling windows are always 100 per key. :func:`load_log` writes them into a fresh folder
for streamer-embedded and :func:`load_broker` produces them into a fresh ``streamer broker``,
in the same partitions (Kafka's murmur2 of the key) and with the same record timestamps.

:func:`build_changelog` makes the recovery run's changelog, :data:`CHANGELOG_TOPIC`: one
record per key, the value a JSON integer that :func:`recovered_value` can recompute, written
with :func:`load_changelog_log` or :func:`load_changelog_broker`.

After a run, with every process stopped, :func:`read_topic` reads an output topic back from
the log's files (:func:`read_committed_topic` as a ``read_committed`` consumer would: below
the last stable offset, without markers and aborted transactions, for the exactly-once
runs), and :func:`check_counts` and :func:`check_windows` compare it with what the input
makes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from streamer.cli.bench_pipeline_events import (
    INPUT_TOPIC,
    PARTITIONS,
    SEED,
    RunFailed,
    create_topics,
    end_offsets,
    opened_log,
    page_views,
    produce,
    read_records,
    write_partition,
)

__all__ = [
    "APP_ID", "CHANGELOG_TOPIC", "COUNTS_TOPIC", "EVENT_TIME_SPAN_MS", "INPUT_TOPIC",
    "PARTITIONS", "TABLE", "WINDOWS_TOPIC", "WINDOW_MS", "Changelog", "Events", "RunFailed",
    "build_changelog", "build_events", "changelog_key", "check_counts", "check_windows",
    "end_offsets", "load_broker", "load_changelog_broker", "load_changelog_log", "load_log",
    "read_committed_topic", "read_topic", "recovered_value",
]

APP_ID = "bench"
TABLE = "counts"
CHANGELOG_TOPIC = f"{APP_ID}-{TABLE}-changelog"  # streamer's name for the table's changelog
COUNTS_TOPIC = "user-counts"  # (1): {"user", "count"} per event
WINDOWS_TOPIC = "user-counts-10s"  # (2): one result per closed window
WINDOW_MS = 10_000
EVENT_TIME_SPAN_MS = 1_000_000  # event times rise evenly over 1,000 s: 100 windows


@dataclass(frozen=True, slots=True)
class Events:
    """The input, built once per invocation; event ``n`` is ``keys[n], values[n]`` at
    ``timestamps_ms[n]`` in partition ``partitions[n]``."""

    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]  # murmur2(key) % PARTITIONS, as Kafka's default partitioner
    timestamps_ms: list[int]  # rising; a multiple of WINDOW_MS first

    def counts(self, count: int) -> Counter[bytes]:
        """Each key's count over the first ``count`` events: the keyed count's last output."""
        return Counter(self.keys[:count])

    def closed_windows(self, count: int) -> Counter[tuple[bytes, int]]:
        """``(key, start_ms) → events`` of every 10-second window that the first ``count``
        events close. A window ``[start, start + 10 s)`` closes when the largest event time of
        its partition reaches its end (grace 0): streamer's rule and quixstreams'
        ``closing_strategy="partition"``. The last window of each partition stays open."""
        watermarks = [-1] * PARTITIONS
        for n in range(count):
            watermarks[self.partitions[n]] = max(watermarks[self.partitions[n]],
                                                 self.timestamps_ms[n])
        windows: Counter[tuple[bytes, int]] = Counter()
        for n in range(count):
            start = self.timestamps_ms[n] - self.timestamps_ms[n] % WINDOW_MS
            if start + WINDOW_MS <= watermarks[self.partitions[n]]:
                windows[(self.keys[n], start)] += 1
        return windows


def build_events(count: int, keys: int, seed: int = SEED) -> Events:
    """The page views of ``streamer bench pipeline`` (the same ones for the same keys), with
    event times."""
    import orjson

    # An hour ago, on a window boundary: inside any retention, and never in the future.
    now_ms = time.time_ns() // 1_000_000
    first_ms = (now_ms - 3_600_000) // WINDOW_MS * WINDOW_MS
    out = Events([], [], [], [])
    for n, (_, partition, view) in enumerate(page_views(count, keys, seed)):
        out.keys.append(view["user"].encode())
        out.values.append(orjson.dumps(view))
        out.partitions.append(partition)
        out.timestamps_ms.append(first_ms + n * EVENT_TIME_SPAN_MS // count)
    return out


# -- the changelog of the recovery run -----------------------------------------------------


def recovered_value(index: int) -> int:
    """The count the recovery changelog holds for key ``index``."""
    return index % 997 + 1


def changelog_key(index: int) -> bytes:
    return f"user-{index:07d}".encode()


Changelog = list[list[tuple[bytes, bytes]]]  # per partition: (key, value) records


def build_changelog(keys: int) -> Changelog:
    """One record per key, in its partition, as streamer's table writes them: the key as
    UTF-8 (a str key), the value as JSON."""
    import orjson

    from streamer.partitioner import murmur2

    partitions: Changelog = [[] for _ in range(PARTITIONS)]
    for index in range(keys):
        key = changelog_key(index)
        partitions[(murmur2(key) & 0x7FFFFFFF) % PARTITIONS].append(
            (key, orjson.dumps(recovered_value(index))))
    return partitions


# -- loading a log folder ------------------------------------------------------------------


def load_log(folder: str, events: Events, count: int, output_topic: str) -> None:
    """Write the first ``count`` events into a new log in ``folder``, as the embedded
    transport would (one open batch of ≤ 1 MiB per partition), and make the output topic."""
    with opened_log(folder) as log:
        log.create_topic(INPUT_TOPIC, PARTITIONS, {})
        log.create_topic(output_topic, PARTITIONS, {})
        for p in range(PARTITIONS):
            write_partition(log.partition(INPUT_TOPIC, p), (
                (events.timestamps_ms[n], events.keys[n], events.values[n])
                for n in range(count) if events.partitions[n] == p
            ))


def load_changelog_log(folder: str, changelog: Changelog) -> None:
    """A new log in ``folder`` with the recovery run's changelog (compacted, as streamer
    makes it) and its empty input topic."""
    now_ms = time.time_ns() // 1_000_000
    with opened_log(folder) as log:
        log.create_topic(INPUT_TOPIC, PARTITIONS, {})
        log.create_topic(CHANGELOG_TOPIC, PARTITIONS, {"cleanup.policy": "compact"})
        for p, records in enumerate(changelog):
            write_partition(log.partition(CHANGELOG_TOPIC, p),
                             ((now_ms, key, value) for key, value in records))


# -- loading a broker ----------------------------------------------------------------------


def load_broker(bootstrap: str, events: Events, count: int, output_topic: str) -> None:
    """Create the input and output topics and produce the first ``count`` events with
    confluent-kafka, each with its event time as the record's timestamp."""
    create_topics(bootstrap, {INPUT_TOPIC: {}, output_topic: {}})
    produce(bootstrap, INPUT_TOPIC, count, lambda n: (
        events.partitions[n], events.keys[n], events.values[n], events.timestamps_ms[n]))


def load_changelog_broker(bootstrap: str, changelog: Changelog) -> None:
    """The recovery run's changelog and input topic, in a fresh broker."""
    create_topics(bootstrap, {INPUT_TOPIC: {}, CHANGELOG_TOPIC: {"cleanup.policy": "compact"}})
    records = [(p, key, value, None) for p, part in enumerate(changelog) for key, value in part]
    produce(bootstrap, CHANGELOG_TOPIC, len(records), records.__getitem__)


# -- checking the output -------------------------------------------------------------------


def read_topic(folder: str, topic: str) -> list[tuple[bytes | None, Any]]:
    """Every record of ``topic`` in the log in ``folder`` (its process stopped), as its key
    and its JSON-decoded value."""
    return [(key, value) for _, _, key, value in read_records(folder, topic)]


def read_committed_topic(folder: str, topic: str) -> list[tuple[bytes | None, Any]]:
    """:func:`read_topic` as ``read_committed`` reads it: the records of committed
    transactions (and of no transaction), below each partition's last stable offset."""
    import orjson

    from streamer.events import TopicPartition
    from streamer.transport.embedded_consumer import decode_committed

    records: list[tuple[bytes | None, Any]] = []
    with opened_log(folder) as log:
        for p in range(PARTITIONS):
            partition = log.partition(topic, p)
            tp = TopicPartition(topic, p)
            offset, end = partition.log_start_offset, partition.last_stable_offset
            aborted = partition.aborted_ranges(offset, end)
            while offset < end:
                events, after = decode_committed(tp, partition.read(offset).records, offset,
                                                 end, aborted)
                records.extend((e.key, orjson.loads(e.value or b"null")) for e in events)
                if after <= offset:
                    raise RunFailed(f"{topic}[{p}] does not read past offset {offset}")
                offset = after
    return records


def check_counts(records: list[tuple[bytes | None, Any]], expected: Counter[bytes]) -> None:
    """The keyed count's output: for each key with ``N`` events, the counts 1 … N, each
    once, keyed by the key; nothing else."""
    seen: dict[bytes, list[int]] = {}
    for key, value in records:
        if not isinstance(value, dict) or key is None or value.get("user", "").encode() != key:
            raise RunFailed(f"an output is {key!r}: {value!r}")
        seen.setdefault(key, []).append(value["count"])
    wrong = [key for key, n in expected.items()
             if sorted(seen.get(key, ())) != list(range(1, n + 1))]
    extra = set(seen) - set(expected)
    if wrong or extra or len(records) != expected.total():
        example = wrong[0] if wrong else None
        raise RunFailed(
            f"the output holds {len(records)} counts for {len(seen)} keys; expected "
            f"{expected.total()} for {len(expected)}; {len(wrong)} keys wrong"
            + (f" (e.g. {example!r}: {expected[example]} events, counts "
               f"{sorted(seen.get(example, ()))[-5:]} at the end)" if example else "")
            + (f", {len(extra)} unexpected keys" if extra else "")
        )


def check_windows(
    records: list[tuple[bytes | None, Any]], expected: Counter[tuple[bytes, int]],
) -> None:
    """The windowed count's output: one result per closed window, with its count and
    bounds, keyed by the key; nothing else. streamer writes ``{"start_ms", "end_ms",
    "value"}``, quixstreams ``{"start", "end", "value"}``."""
    seen: Counter[tuple[bytes, int]] = Counter()
    for key, value in records:
        if not isinstance(value, dict) or key is None:
            raise RunFailed(f"an output is {key!r}: {value!r}")
        start = value.get("start_ms", value.get("start"))
        end = value.get("end_ms", value.get("end"))
        if not isinstance(start, int) or end != start + WINDOW_MS:
            raise RunFailed(f"an output's window is not 10 s: {key!r}: {value!r}")
        if expected.get((key, start)) != value.get("value"):
            raise RunFailed(f"output {key!r}: {value!r}; expected count "
                            f"{expected.get((key, start))}")
        seen[(key, start)] += 1
    if len(records) != len(expected) or set(seen) != set(expected):
        missing = len(set(expected) - set(seen))
        raise RunFailed(f"the output holds {len(records)} windows ({len(seen)} distinct, "
                        f"{missing} missing); expected {len(expected)}")
