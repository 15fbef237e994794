"""``streamer bench joins``: its inputs, the output checks, and tiny runs whose outputs are
verified (embedded; and over the broker against quixstreams)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from streamer.cli.bench_joins import parse_only, run_joins_benchmark
from streamer.cli.bench_joins_events import (
    ENRICHED_TOPIC,
    PAIRS_TOPIC,
    PARTITIONS,
    SLOT_MS,
    WITHIN_MS,
    RunFailed,
    build_orders,
    build_pairs,
    check_enriched,
    check_pairs,
    customer,
)
from streamer.cli.bench_pipeline import importable
from streamer.cli.bench_pipeline_events import opened_log, write_partition

from streamer.partitioner import murmur2


def test_parse_only() -> None:
    everything = (["stream-table", "stream-stream"],
                  ["streamer-embedded", "streamer-kafka", "quixstreams"])
    assert parse_only(None) == everything
    assert parse_only("quixstreams, stream-stream") == (["stream-stream"], ["quixstreams"])
    with pytest.raises(SystemExit):
        parse_only("stream-table,flink")


def test_orders_come_after_every_customer_in_their_customers_partition() -> None:
    customers, orders = build_orders(3_000, 200)
    assert build_orders(3_000, 200)[1].values == orders.values  # seeded
    assert len(customers) == 200 and len(orders) == 3_000
    assert min(orders.timestamps_ms) > max(customers.timestamps_ms)
    for records in (customers, orders):
        assert all(p == (murmur2(k) & 0x7FFFFFFF) % PARTITIONS
                   for k, p in zip(records.keys, records.partitions, strict=True))
    for key, value in zip(orders.keys, orders.values, strict=True):
        assert orjson.loads(value)["customer"] == key.decode()


def test_each_impression_has_one_click_in_its_window_and_no_other() -> None:
    impressions, clicks = build_pairs(4_000, 50)
    shown = {orjson.loads(v)["impression"]: (k, t) for k, v, t in
             zip(impressions.keys, impressions.values, impressions.timestamps_ms, strict=True)}
    clicked = {orjson.loads(v)["click"]: (k, t) for k, v, t in
               zip(clicks.keys, clicks.values, clicks.timestamps_ms, strict=True)}
    assert sorted(shown) == sorted(clicked) == list(range(2_000))
    for n, (key, at_ms) in shown.items():
        assert clicked[n][0] == key and abs(clicked[n][1] - at_ms) <= WITHIN_MS // 2
    by_key: dict[bytes, list[int]] = {}
    for key, at_ms in shown.values():
        by_key.setdefault(key, []).append(at_ms)
    for times in by_key.values():  # a key's impressions are too far apart to share a click
        times.sort()
        assert all(b - a > 2 * WITHIN_MS for a, b in zip(times, times[1:], strict=False))
    assert SLOT_MS > 4 * WITHIN_MS
    assert impressions.timestamps_ms == sorted(impressions.timestamps_ms)
    assert clicks.timestamps_ms == sorted(clicks.timestamps_ms)


def _write(folder: Path, topic: str, rows: list[tuple[bytes, object]]) -> str:
    path = str(folder / "log")
    with opened_log(path) as log:
        log.create_topic(topic, PARTITIONS, {})
        write_partition(log.partition(topic, 0),
                        iter([(0, key, orjson.dumps(value)) for key, value in rows]))
    return path


def test_the_checks_want_every_row_once_and_right(tmp_path: Path) -> None:
    _, orders = build_orders(3, 5)
    rows = [(orders.keys[n], {"order": orjson.loads(orders.values[n]),
                              "customer": customer(int(orders.keys[n][1:]))}) for n in range(3)]
    check_enriched(_write(tmp_path / "good", ENRICHED_TOPIC, rows), orders)
    with pytest.raises(RunFailed, match="1 of 3 missing"):
        check_enriched(_write(tmp_path / "short", ENRICHED_TOPIC, rows[:2]), orders)
    wrong = [*rows[:2], (rows[2][0], {**rows[2][1], "customer": None})]
    with pytest.raises(RunFailed, match="expected order"):
        check_enriched(_write(tmp_path / "wrong", ENRICHED_TOPIC, wrong), orders)
    impressions, clicks = build_pairs(4, 2)
    pairs = [(impressions.keys[i], {"impression": orjson.loads(impressions.values[i]),
                                    "click": next(orjson.loads(v) for v in clicks.values
                                                  if orjson.loads(v)["click"] == n)})
             for i, n in enumerate(orjson.loads(v)["impression"] for v in impressions.values)]
    check_pairs(_write(tmp_path / "pairs", PAIRS_TOPIC, pairs), impressions)
    with pytest.raises(RunFailed, match="more than once"):
        check_pairs(_write(tmp_path / "twice", PAIRS_TOPIC, [*pairs, pairs[0]]), impressions)


def test_a_tiny_run_of_both_workloads_embedded(tmp_path: Path) -> None:
    report = run_joins_benchmark(
        workloads=["stream-table", "stream-stream"], frameworks=["streamer-embedded"],
        events=2_000, customers=300, keys=40, runs=1, data_dir=str(tmp_path),
        profile_dir=None, json_path=str(tmp_path / "report.json"),
        console=Console(file=io.StringIO(), width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    rows = {m["workload"]: m for m in report["measurements"]}
    assert rows["stream-table"]["outputs"] == 2_000 and rows["stream-stream"]["outputs"] == 1_000
    assert rows["stream-table"]["load_seconds"][0] > 0
    for m in rows.values():
        assert m["runs"] == 1 and m["per_s_median"] > 0
        assert m["durable_seconds"][0] >= m["seconds"][0] > 0
    assert report["ratios"] == []  # no quixstreams to compare with
    assert json.loads((tmp_path / "report.json").read_text())["failures"] == 0


@pytest.mark.skipif(not (importable("confluent_kafka") and importable("quixstreams")),
                    reason="needs confluent-kafka and quixstreams")
def test_a_tiny_table_run_over_the_broker_matches_quixstreams(tmp_path: Path) -> None:
    output = io.StringIO()
    report = run_joins_benchmark(  # the two-phase one: quixstreams must keep its state
        workloads=["stream-table"], frameworks=["streamer-kafka", "quixstreams"],
        events=1_000, customers=100, keys=20, runs=1, data_dir=str(tmp_path),
        profile_dir=None, json_path=None, console=Console(file=output, width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    (ratio,) = report["ratios"]
    assert ratio["workload"] == "stream-table" and ratio["goal"] is None and ratio["ratio"] > 0
    assert "streamer bench joins" in output.getvalue()
