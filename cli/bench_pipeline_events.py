"""The input of ``streamer bench pipeline`` and the check of its output.

:func:`build_events` makes the page views once per invocation (seeded: every invocation reads
the same ones); :func:`load_log` writes them into a fresh folder for streamer-embedded, and
:func:`load_broker` produces them into a fresh ``streamer broker`` with confluent-kafka, in
the same partitions (Kafka's murmur2 of the key). After a run, with every process stopped,
:func:`check_output` reads the output topic back from the log's files.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from streamer.cli.bench_pipeline_apps import THRESHOLD_MS, keep

__all__ = [
    "INPUT_TOPIC", "OUTPUT_TOPIC", "PARTITIONS", "Events", "RunFailed", "build_events",
    "check_output", "end_offsets", "load_broker", "load_log",
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
    """A pipeline lost, duplicated or altered outputs, stalled, or its process died."""


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


def build_events(count: int, seed: int = SEED) -> Events:
    import orjson

    from streamer.partitioner import murmur2

    rng = random.Random(seed)
    users = [f"u{i}" for i in range(KEYS)]
    partition_of = {u: (murmur2(u.encode()) & 0x7FFFFFFF) % PARTITIONS for u in users}
    keys, values, partitions, kept = [], [], [], []
    for n in range(count):
        user = users[rng.randrange(KEYS)]
        view = {"user": user, "page": f"/p/{rng.randrange(100)}",
                "duration_ms": rng.randrange(2 * THRESHOLD_MS), "n": n}
        keys.append(user.encode())
        values.append(orjson.dumps(view))
        partitions.append(partition_of[user])
        kept.append(keep(view))
    return Events(keys, values, partitions, kept)


def load_log(folder: str, events: Events, count: int) -> None:
    """Write the first ``count`` events into a new log in ``folder``, as the embedded
    transport would (one open batch of ≤ 1 MiB per partition), and make the output topic."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from streamer.log import Log

    def new_batch() -> DefaultRecordBatchBuilder:
        return DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, BATCH_BYTES_MAX)

    timestamp_ms = time.time_ns() // 1_000_000
    with Log.open(folder) as log:
        log.create_topic(INPUT_TOPIC, PARTITIONS, {})
        log.create_topic(OUTPUT_TOPIC, PARTITIONS, {})
        for p in range(PARTITIONS):
            partition = log.partition(INPUT_TOPIC, p)
            batch, delta = new_batch(), 0
            for n in range(count):
                if events.partitions[n] != p:
                    continue
                key, value = events.keys[n], events.values[n]
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
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    new = [NewTopic(INPUT_TOPIC, PARTITIONS, 1), NewTopic(OUTPUT_TOPIC, PARTITIONS, 1)]
    for future in admin.create_topics(new).values():
        future.result(timeout=REQUEST_S_MAX)
    errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
        "delivery.report.only.error": True,
        "on_delivery": lambda error, _: errors.append(str(error)) if error else None,
    })
    for n in range(count):
        while True:
            try:
                producer.produce(INPUT_TOPIC, events.values[n], events.keys[n],
                                 partition=events.partitions[n])
                break
            except BufferError:
                producer.poll(0.005)
        if n % LOAD_POLL_EVERY == 0:
            producer.poll(0)
    left = producer.flush(REQUEST_S_MAX * 10)
    if errors or left:
        raise RunFailed(f"loading the input: {len(errors)} failed, {left} undelivered"
                        + (f"; first: {errors[0]}" if errors else ""))
    loaded = end_offsets(admin, INPUT_TOPIC)
    if loaded != count:
        raise RunFailed(f"loading the input: the topic holds {loaded} events, not {count}")


def end_offsets(admin: Any, topic: str) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
    futures = admin.list_offsets(request, request_timeout=REQUEST_S_MAX)
    return sum(int(future.result().offset) for future in futures.values())


def check_output(folder: str, expected: list[int]) -> None:
    """Read the output topic back from the log's files (its process stopped): every
    expected ``n`` exactly once, reshaped, and nothing else."""
    import orjson
    from aiokafka.record.memory_records import MemoryRecords
    from streamer.log import Log

    seen: list[int] = []
    with Log.open(folder) as log:
        for p in range(PARTITIONS):
            partition = log.partition(OUTPUT_TOPIC, p)
            offset = 0
            while offset < partition.high_watermark:
                records = MemoryRecords(partition.read(offset).records)
                while records.has_next():
                    batch = records.next_batch()
                    assert batch is not None
                    for record in batch:
                        if record.offset >= offset:
                            view = orjson.loads(record.value or b"null")
                            if "seconds" not in view or record.key != view["user"].encode():
                                raise RunFailed(f"output {p}@{record.offset} is {view!r}")
                            seen.append(view["n"])
                            offset = record.offset + 1
    if len(seen) != len(expected) or sorted(seen) != expected:
        missing = len(set(expected) - set(seen))
        raise RunFailed(f"the output holds {len(seen)} events ({len(set(seen))} distinct, "
                        f"{missing} missing); expected {len(expected)}")
