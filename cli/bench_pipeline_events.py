"""The input of ``streamer bench pipeline`` and the check of its output; the log and broker
helpers ``streamer bench stateful`` loads and reads its own with.

:func:`build_events` makes the page views once per invocation (seeded: every invocation reads
the same ones); :func:`load_log` writes them into a fresh folder for streamer-embedded, and
:func:`load_broker` produces them into a fresh ``streamer broker`` with confluent-kafka, in
the same partitions (Kafka's murmur2 of the key). After a run, with every process stopped,
:func:`check_output` reads the output topic back from the log's files.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamer.cli.bench_pipeline_apps import THRESHOLD_MS, keep

__all__ = [
    "INPUT_TOPIC", "OUTPUT_TOPIC", "PARTITIONS", "Events", "RunFailed", "build_events",
    "check_output", "create_topics", "end_offsets", "load_broker", "load_log", "opened_log",
    "page_views", "produce", "read_records", "write_partition",
]

KEYS = 1_000
PARTITIONS = 4
SEED = 20_261_126
INPUT_TOPIC = "page-views"
OUTPUT_TOPIC = "long-views"
BATCH_BYTES_MAX = 1 << 20  # of the batches written into streamer-embedded's folder
REQUEST_S_MAX = 30.0
LOAD_POLL_EVERY = 10_000  # produce() calls between poll(0)s while loading a broker


class RunFailed(RuntimeError):
    """A run lost, duplicated, altered or miscounted outputs, stalled, or its process died."""


@dataclass(frozen=True, slots=True)
class Events:
    """The input, built once per invocation; event ``n`` is ``keys[n], values[n]``."""

    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]  # murmur2(key) % PARTITIONS, as Kafka's default partitioner
    kept: list[bool]  # what keep() says of each

    def outputs(self, count: int) -> list[int]:
        """The ``n``s a pipeline over the first ``count`` events sends on."""
        return [n for n in range(count) if self.kept[n]]


def page_views(count: int, keys: int, seed: int = SEED) -> Iterator[tuple[int, int, Any]]:
    """``(user, partition, view)`` of events 0 … ``count - 1``, users ``u0`` … ``u{keys - 1}``
    drawn at random (seeded), each in its key's partition (murmur2, as Kafka's default)."""
    from streamer.partitioner import murmur2

    rng = random.Random(seed)
    users = [f"u{i}" for i in range(keys)]
    partition_of = [(murmur2(u.encode()) & 0x7FFFFFFF) % PARTITIONS for u in users]
    for n in range(count):
        user = rng.randrange(keys)
        view = {"user": users[user], "page": f"/p/{rng.randrange(100)}",
                "duration_ms": rng.randrange(2 * THRESHOLD_MS), "n": n}
        yield user, partition_of[user], view


def build_events(count: int, seed: int = SEED) -> Events:
    import orjson

    keys, values, partitions, kept = [], [], [], []
    for _, partition, view in page_views(count, KEYS, seed):
        keys.append(view["user"].encode())
        values.append(orjson.dumps(view))
        partitions.append(partition)
        kept.append(keep(view))
    return Events(keys, values, partitions, kept)


def load_log(folder: str, events: Events, count: int) -> None:
    """Write the first ``count`` events into a new log in ``folder``, as the embedded
    transport would (one open batch of ≤ 1 MiB per partition), and make the output topic."""
    timestamp_ms = time.time_ns() // 1_000_000
    with opened_log(folder) as log:
        log.create_topic(INPUT_TOPIC, PARTITIONS, {})
        log.create_topic(OUTPUT_TOPIC, PARTITIONS, {})
        for p in range(PARTITIONS):
            write_partition(log.partition(INPUT_TOPIC, p), (
                (timestamp_ms, events.keys[n], events.values[n])
                for n in range(count) if events.partitions[n] == p
            ))


def opened_log(folder: str) -> Any:
    from streamer.log import Log

    return Log.open(folder)


def write_partition(partition: Any, records: Iterator[tuple[int, bytes, bytes]]) -> None:
    """Append ``(timestamp_ms, key, value)`` records in batches of ≤ 1 MiB, then flush."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    def new_batch() -> DefaultRecordBatchBuilder:
        return DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, BATCH_BYTES_MAX)

    batch, delta = new_batch(), 0
    for timestamp_ms, key, value in records:
        if batch.append(delta, timestamp_ms, key, value, []) is None:  # full
            partition.append(batch.build(), wait_durable=False)
            batch, delta = new_batch(), 0
            batch.append(0, timestamp_ms, key, value, [])
        delta += 1
    if delta:
        partition.append(batch.build(), wait_durable=False)
    partition.flush()


def load_broker(bootstrap: str, events: Events, count: int) -> None:
    """Create both topics and produce the first ``count`` events with confluent-kafka."""
    create_topics(bootstrap, {INPUT_TOPIC: {}, OUTPUT_TOPIC: {}})
    produce(bootstrap, INPUT_TOPIC, count, lambda n: (
        events.partitions[n], events.keys[n], events.values[n], None))


def create_topics(bootstrap: str, topics: dict[str, dict[str, str]]) -> None:
    """``{name: config}``, each of PARTITIONS partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    new = [NewTopic(name, PARTITIONS, 1, config=config) for name, config in topics.items()]
    for future in admin.create_topics(new).values():
        future.result(timeout=REQUEST_S_MAX)


def produce(
    bootstrap: str, topic: str, count: int,
    record: Callable[[int], tuple[int, bytes, bytes, int | None]],
) -> None:
    """Produce ``record(n) = (partition, key, value, timestamp_ms or None)`` for ``n`` in
    ``range(count)`` with confluent-kafka; RunFailed unless the topic then holds them all."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
        "delivery.report.only.error": True,
        "on_delivery": lambda error, _: errors.append(str(error)) if error else None,
    })
    for n in range(count):
        partition, key, value, timestamp_ms = record(n)
        while True:
            try:
                producer.produce(topic, value, key, partition=partition,
                                 timestamp=timestamp_ms or 0)
                break
            except BufferError:
                producer.poll(0.005)
        if n % LOAD_POLL_EVERY == 0:
            producer.poll(0)
    left = producer.flush(REQUEST_S_MAX * 10)
    if errors or left:
        raise RunFailed(f"loading {topic}: {len(errors)} failed, {left} undelivered"
                        + (f"; first: {errors[0]}" if errors else ""))
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    loaded = end_offsets(admin, topic)
    if loaded != count:
        raise RunFailed(f"loading {topic}: the topic holds {loaded} records, not {count}")


def end_offsets(admin: Any, topic: str) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
    futures = admin.list_offsets(request, request_timeout=REQUEST_S_MAX)
    return sum(int(future.result().offset) for future in futures.values())


def read_records(folder: str, topic: str) -> list[tuple[int, int, bytes | None, Any]]:
    """Every record of ``topic`` in the log in ``folder`` (its process stopped), as its
    partition, offset, key and JSON-decoded value."""
    import orjson
    from aiokafka.record.memory_records import MemoryRecords

    records: list[tuple[int, int, bytes | None, Any]] = []
    with opened_log(folder) as log:
        for p in range(PARTITIONS):
            partition = log.partition(topic, p)
            offset = 0
            while offset < partition.high_watermark:
                batches = MemoryRecords(partition.read(offset).records)
                while batches.has_next():
                    batch = batches.next_batch()
                    assert batch is not None
                    for record in batch:
                        if record.offset >= offset:
                            records.append((p, record.offset, record.key,
                                            orjson.loads(record.value or b"null")))
                            offset = record.offset + 1
    return records


def check_output(folder: str, expected: list[int]) -> None:
    """Read the output topic back from the log's files (its process stopped): every
    expected ``n`` exactly once, reshaped, and nothing else."""
    seen: list[int] = []
    for p, offset, key, view in read_records(folder, OUTPUT_TOPIC):
        if "seconds" not in view or key != view["user"].encode():
            raise RunFailed(f"output {p}@{offset} is {view!r}")
        seen.append(view["n"])
    if len(seen) != len(expected) or sorted(seen) != expected:
        missing = len(set(expected) - set(seen))
        raise RunFailed(f"the output holds {len(seen)} events ({len(set(seen))} distinct, "
                        f"{missing} missing); expected {len(expected)}")
