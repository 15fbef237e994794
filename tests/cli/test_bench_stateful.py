"""``streamer bench stateful``: its events, the expected windows, the output checks, and tiny
runs whose outputs are verified."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from streamer.cli.bench_pipeline import importable
from streamer.cli.bench_stateful import parse_only, run_stateful_benchmark
from streamer.cli.bench_stateful_events import (
    PARTITIONS,
    WINDOW_MS,
    RunFailed,
    build_changelog,
    build_events,
    check_counts,
    check_windows,
    recovered_value,
)

from streamer.partitioner import murmur2


def test_parse_only() -> None:
    everything = (["count", "count-eos", "window", "recovery"],
                  ["streamer-embedded", "streamer-kafka", "quixstreams"])
    assert parse_only(None) == everything
    assert parse_only("quixstreams, count") == (["count"], ["quixstreams"])
    assert parse_only("recovery") == (["recovery"], everything[1])
    with pytest.raises(SystemExit):
        parse_only("count,flink")


def test_the_events_are_the_same_every_time_with_rising_event_times() -> None:
    events = build_events(3_000, keys=40)
    again = build_events(3_000, keys=40)
    assert (events.keys, events.values, events.partitions) == \
        (again.keys, again.values, again.partitions)
    views = [orjson.loads(value) for value in events.values]
    assert [view["n"] for view in views] == list(range(3_000))
    assert len(set(events.keys)) == 40
    assert all(p == (murmur2(k) & 0x7FFFFFFF) % PARTITIONS
               for k, p in zip(events.keys, events.partitions, strict=True))
    times = events.timestamps_ms
    assert times == sorted(times) and times[0] % WINDOW_MS == 0
    assert 990_000 <= times[-1] - times[0] < 1_000_000  # 100 windows of 10 s


def test_the_expected_windows_are_those_each_partitions_event_time_closed() -> None:
    events = build_events(3_000, keys=40)
    windows = events.closed_windows(3_000)
    last = {}
    for n in range(3_000):
        last[events.partitions[n]] = events.timestamps_ms[n]
    for (key, start), count in windows.items():
        partition = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
        assert start + WINDOW_MS <= last[partition]
        assert count == sum(1 for n in range(3_000) if events.keys[n] == key
                            and start <= events.timestamps_ms[n] < start + WINDOW_MS)
    assert sum(windows.values()) < 3_000  # the last window of each partition is still open
    assert len({start for _, start in windows}) == 99


def test_the_count_check_wants_each_count_once() -> None:
    expected = Counter({b"a": 2, b"b": 1})
    outputs = [(b"a", {"user": "a", "count": 1}), (b"b", {"user": "b", "count": 1}),
               (b"a", {"user": "a", "count": 2})]
    check_counts(outputs, expected)
    with pytest.raises(RunFailed, match="1 keys wrong"):
        check_counts([*outputs[:2], (b"a", {"user": "a", "count": 1})], expected)
    with pytest.raises(RunFailed, match="holds 4 counts"):
        check_counts([*outputs, outputs[0]], expected)
    with pytest.raises(RunFailed, match="an output is"):
        check_counts([(b"b", {"user": "a", "count": 1})], expected)


def test_the_window_check_reads_both_frameworks_formats() -> None:
    expected = Counter({(b"a", 0): 3, (b"b", 10_000): 1})
    streamer_style = [(b"a", {"start_ms": 0, "end_ms": 10_000, "value": 3, "final": True}),
                      (b"b", {"start_ms": 10_000, "end_ms": 20_000, "value": 1, "final": True})]
    quix_style = [(b"a", {"start": 0, "end": 10_000, "value": 3}),
                  (b"b", {"start": 10_000, "end": 20_000, "value": 1})]
    check_windows(streamer_style, expected)
    check_windows(quix_style, expected)
    with pytest.raises(RunFailed, match="expected count 3"):
        check_windows([(b"a", {"start": 0, "end": 10_000, "value": 2})], expected)
    with pytest.raises(RunFailed, match="holds 3 windows"):
        check_windows([*quix_style, quix_style[0]], expected)
    with pytest.raises(RunFailed, match="1 missing"):
        check_windows(quix_style[:1], expected)


def test_the_changelog_has_every_key_once_in_its_partition() -> None:
    changelog = build_changelog(1_000)
    records = [(p, key, value) for p, part in enumerate(changelog) for key, value in part]
    assert len({key for _, key, _ in records}) == 1_000
    assert all(p == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS for p, key, _ in records)
    assert {int(key[5:]): int(value) for _, key, value in records} == \
        {i: recovered_value(i) for i in range(1_000)}


def test_a_tiny_run_of_every_workload_embedded(tmp_path: Path) -> None:
    report = run_stateful_benchmark(
        workloads=["count", "window", "recovery"], frameworks=["streamer-embedded"],
        events=2_000, keys=20, recovery_keys=5_000, runs=1, data_dir=str(tmp_path),
        profile_dir=None, json_path=str(tmp_path / "report.json"),
        console=Console(file=io.StringIO(), width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    rows = {m["workload"]: m for m in report["measurements"]}
    assert list(rows) == ["count", "window", "recovery"]
    assert rows["count"]["outputs"] == 2_000
    assert 0 < rows["window"]["outputs"] < 2_000
    assert rows["recovery"]["items"] == 5_000 and rows["recovery"]["unit"] == "keys/s"
    for m in rows.values():
        assert m["runs"] == 1 and m["per_s_median"] > 0
    assert rows["count"]["durable_seconds"][0] >= rows["count"]["seconds"][0] > 0
    assert rows["recovery"]["restore_seconds"][0] > 0
    (recovery,) = report["ratios"]  # no quixstreams to compare count and window with
    assert recovery["workload"] == "recovery" and recovery["goal_keys_per_s"] == 300_000
    assert json.loads((tmp_path / "report.json").read_text())["failures"] == 0


@pytest.mark.skipif(not (importable("confluent_kafka") and importable("quixstreams")),
                    reason="needs confluent-kafka and quixstreams")
def test_a_tiny_windowed_run_over_the_broker_matches_quixstreams(tmp_path: Path) -> None:
    output = io.StringIO()
    report = run_stateful_benchmark(
        workloads=["window"], frameworks=["streamer-kafka", "quixstreams"], events=1_000,
        keys=10, recovery_keys=1, runs=1, data_dir=str(tmp_path), profile_dir=None,
        json_path=None, console=Console(file=output, width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    assert [m["framework"] for m in report["measurements"]] == ["streamer-kafka", "quixstreams"]
    (ratio,) = report["ratios"]
    assert ratio["goal"] == 1.5 and ratio["ratio"] > 0
    assert "streamer bench stateful" in output.getvalue()


@pytest.mark.skipif(not (importable("confluent_kafka") and importable("quixstreams")),
                    reason="needs confluent-kafka and quixstreams")
def test_a_tiny_exactly_once_run_beside_at_least_once(tmp_path: Path) -> None:
    """count-eos: streamer and quixstreams in transactions on the same events, the output
    read back read_committed and checked; its ratios to count and to quixstreams."""
    report = run_stateful_benchmark(
        workloads=["count", "count-eos"], frameworks=["streamer-embedded", "quixstreams"],
        events=1_000, keys=10, recovery_keys=1, runs=1, data_dir=str(tmp_path),
        profile_dir=None, json_path=None, console=Console(file=io.StringIO(), width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    rows = {(m["workload"], m["framework"]): m for m in report["measurements"]}
    assert rows[("count-eos", "streamer-embedded")]["outputs"] == 1_000
    assert rows[("count-eos", "streamer-embedded")]["durable_seconds"][0] > 0
    ratios = {(r["workload"], r["framework"], r["over"]): r for r in report["ratios"]}
    assert ratios[("count-eos", "streamer-embedded", "count")]["goal"] == 0.85
    assert ratios[("count-eos", "quixstreams", "count")]["ratio"] > 0
    assert ratios[("count-eos", "streamer-embedded", "quixstreams")]["goal"] == 3.0
