"""The input of ``streamer bench joins`` and the checks of what the runs wrote.

Two inputs, built once per invocation (seeded: every invocation reads the same ones), keyed
and partitioned alike (Kafka's murmur2 of the key, :data:`PARTITIONS` partitions), with
record timestamps from an hour ago (inside any retention):

- **stream-table**: :data:`CUSTOMERS_TOPIC`, one record per customer (100,000 by default,
  ``{"id", "name", "tier", "region"}``), and :data:`ORDERS_TOPIC`, the orders
  (``{"order": n, "customer", "cents"}``, keyed by customer id, each customer drawn at
  random), timed after every customer record. An order comes out enriched:
  ``{"order": <order>, "customer": <its customer's record>}``.
- **stream-stream**: :data:`IMPRESSIONS_TOPIC` and :data:`CLICKS_TOPIC`, half the events
  each: impression ``n`` of ad ``ads[n % keys]`` at slot ``n // keys`` (slots
  :data:`SLOT_MS` apart, so a key's impressions are far apart), and click ``n`` of the same
  ad up to half a window (:data:`WITHIN_MS`) before or after it. Each impression joins
  exactly its click: ``{"impression": <impression>, "click": <click>}``.

:func:`load_log` writes a topic into a log folder (streamer-embedded, its process stopped),
:func:`load_broker` produces it into a ``streamer broker`` with confluent-kafka; after a run
:func:`check_enriched` and :func:`check_pairs` read the output back from the log's files.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streamer.cli.bench_pipeline_events import (
    PARTITIONS,
    SEED,
    RunFailed,
    create_topics,
    opened_log,
    produce,
    read_records,
    write_partition,
)

__all__ = [
    "APP_ID", "CLICKS_TOPIC", "CUSTOMERS_TOPIC", "ENRICHED_TOPIC", "IMPRESSIONS_TOPIC",
    "ORDERS_TOPIC", "PAIRS_TOPIC", "PARTITIONS", "SLOT_MS", "WITHIN_MS", "Records", "RunFailed",
    "build_orders", "build_pairs", "check_enriched", "check_pairs", "load_broker", "load_log",
]

APP_ID = "bench-joins"
CUSTOMERS_TOPIC = "customers"
ORDERS_TOPIC = "orders"
ENRICHED_TOPIC = "enriched-orders"
IMPRESSIONS_TOPIC = "impressions"
CLICKS_TOPIC = "clicks"
PAIRS_TOPIC = "clicked-impressions"
WITHIN_MS = 5_000  # the stream-stream join's window: ± 5 s
SLOT_MS = 40_000  # one impression of each ad every 40 s: a click joins its own only
ORDERS_SPAN_MS = 1_000_000  # order times rise evenly over 1,000 s


@dataclass(frozen=True, slots=True)
class Records:
    """One topic's records, in the order they are written: record ``n`` is
    ``keys[n], values[n]`` at ``timestamps_ms[n]`` in partition ``partitions[n]``."""

    topic: str
    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]
    timestamps_ms: list[int]

    def __len__(self) -> int:
        return len(self.keys)


def _first_ms() -> int:
    """An hour ago, on a second: inside any retention, and never in the future."""
    return (time.time_ns() // 1_000_000 - 3_600_000) // 1000 * 1000


def _partition(key: bytes) -> int:
    from streamer.partitioner import murmur2

    partition: int = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
    return partition


def _records(topic: str, rows: Iterator[tuple[bytes, Any, int]]) -> Records:
    import orjson

    out = Records(topic, [], [], [], [])
    for key, value, timestamp_ms in rows:
        out.keys.append(key)
        out.values.append(orjson.dumps(value))
        out.partitions.append(_partition(key))
        out.timestamps_ms.append(timestamp_ms)
    return out


def customer(index: int) -> dict[str, Any]:
    return {"id": f"c{index:07d}", "name": f"customer {index}", "tier": index % 3,
            "region": ("eu", "us", "apac")[index % 7 % 3]}


def build_orders(orders: int, customers: int, seed: int = SEED) -> tuple[Records, Records]:
    """The customers (one record each) and the orders, timed after every customer."""
    first_ms = _first_ms()
    table = _records(CUSTOMERS_TOPIC, (
        (f"c{i:07d}".encode(), customer(i), first_ms) for i in range(customers)))
    rng = random.Random(seed)

    def order_rows() -> Iterator[tuple[bytes, Any, int]]:
        for n in range(orders):
            index = rng.randrange(customers)
            key = f"c{index:07d}"
            yield (key.encode(), {"order": n, "customer": key, "cents": rng.randrange(10_000)},
                   first_ms + 1_000 + n * ORDERS_SPAN_MS // orders)

    return table, _records(ORDERS_TOPIC, order_rows())


def build_pairs(events: int, keys: int, seed: int = SEED) -> tuple[Records, Records]:
    """Impressions and clicks, ``events // 2`` of each, each topic in time order."""
    count = events // 2
    first_ms = _first_ms()
    rng = random.Random(seed)
    rows: list[tuple[bytes, int, int, int]] = []  # key, n, impression ms, click ms
    for n in range(count):
        key = f"ad{n % keys:06d}".encode()
        shown_ms = first_ms + (n // keys) * SLOT_MS + rng.randrange(SLOT_MS // 4)
        rows.append((key, n, shown_ms, shown_ms + rng.randrange(-WITHIN_MS // 2,
                                                                WITHIN_MS // 2 + 1)))
    shown = sorted(rows, key=lambda row: row[2])
    clicked = sorted(rows, key=lambda row: row[3])
    impressions = _records(IMPRESSIONS_TOPIC, (
        (key, {"impression": n, "ad": key.decode()}, at) for key, n, at, _ in shown))
    clicks = _records(CLICKS_TOPIC, (
        (key, {"click": n, "ad": key.decode()}, at) for key, n, _, at in clicked))
    return impressions, clicks


# -- loading ---------------------------------------------------------------------------------


def load_log(folder: str, records: Records, topics: tuple[str, ...] = ()) -> None:
    """Append ``records`` to a log in ``folder`` (its process stopped), creating ``topics``
    and the records' own topic if missing, in batches as the embedded transport writes."""
    with opened_log(folder) as log:
        for name in (records.topic, *topics):
            if not log.has_topic(name):
                log.create_topic(name, PARTITIONS, {})
        for p in range(PARTITIONS):
            write_partition(log.partition(records.topic, p), (
                (records.timestamps_ms[n], records.keys[n], records.values[n])
                for n in range(len(records)) if records.partitions[n] == p
            ))


def load_broker(bootstrap: str, records: Records, topics: tuple[str, ...] = ()) -> None:
    """Produce ``records`` into a ``streamer broker`` with confluent-kafka, creating
    ``topics`` first (the records' own topic among them, unless it exists)."""
    if topics:
        create_topics(bootstrap, {name: {} for name in topics})
    produce(bootstrap, records.topic, len(records), lambda n: (
        records.partitions[n], records.keys[n], records.values[n], records.timestamps_ms[n]))


# -- checking --------------------------------------------------------------------------------


def check_enriched(folder: str, orders: Records) -> None:
    """Every order exactly once, keyed by its customer, with its customer's record."""
    import orjson

    seen = [0] * len(orders)
    for p, offset, key, value in read_records(folder, ENRICHED_TOPIC):
        try:
            order, found = value["order"], value["customer"]
            n = order["order"]
            expected = orjson.loads(orders.values[n])
        except (KeyError, TypeError, IndexError):
            raise RunFailed(f"output {p}@{offset} is {value!r}") from None
        index = int(expected["customer"][1:])
        if key != orders.keys[n] or order != expected or found != customer(index):
            raise RunFailed(f"output {p}@{offset} is {key!r}: {value!r}; expected order "
                            f"{expected!r} with customer {customer(index)!r}")
        seen[n] += 1
    _exactly_once(seen, "orders")


def check_pairs(folder: str, impressions: Records) -> None:
    """Every impression exactly once, keyed by its ad, with its own click."""
    seen = [0] * len(impressions)
    for p, offset, key, value in read_records(folder, PAIRS_TOPIC):
        try:
            shown, clicked = value["impression"], value["click"]
            n = shown["impression"]
        except (KeyError, TypeError):
            raise RunFailed(f"output {p}@{offset} is {value!r}") from None
        if clicked.get("click") != n or key is None or shown.get("ad") != key.decode() \
                or clicked.get("ad") != key.decode() or not 0 <= n < len(seen):
            raise RunFailed(f"output {p}@{offset} is {key!r}: {value!r}")
        seen[n] += 1
    _exactly_once(seen, "impressions")


def _exactly_once(seen: list[int], what: str) -> None:
    missing = sum(1 for times in seen if times == 0)
    repeated = sum(1 for times in seen if times > 1)
    if missing or repeated:
        raise RunFailed(f"{what}: {missing} of {len(seen)} missing from the output, "
                        f"{repeated} more than once")
