"""``streamer bench pipeline``: its events, its output check, and tiny runs of every pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from rich.console import Console
from streamer.cli.bench_pipeline import importable, parse_pipelines, run_pipeline_benchmark
from streamer.cli.bench_pipeline_apps import reshape
from streamer.cli.bench_pipeline_events import (
    OUTPUT_TOPIC,
    PARTITIONS,
    RunFailed,
    build_events,
    check_output,
    load_log,
)
from streamer.log import Log

from streamer.partitioner import murmur2


def _installed(*modules: str) -> bool:
    return all(importable(module) for module in modules)


def test_parse_pipelines() -> None:
    assert parse_pipelines(None) == ["streamer-embedded", "streamer-kafka", "quixstreams", "faust"]
    assert parse_pipelines("faust, streamer-embedded") == ["streamer-embedded", "faust"]
    with pytest.raises(SystemExit):
        parse_pipelines("streamer,flink")


def test_the_events_are_the_same_every_time_and_half_pass_the_filter() -> None:
    events = build_events(2_000)
    assert events == build_events(2_000)
    views = [orjson.loads(value) for value in events.values]
    assert [view["n"] for view in views] == list(range(2_000))
    assert all(key == view["user"].encode() for key, view in zip(events.keys, views, strict=True))
    assert all(p == (murmur2(k) & 0x7FFFFFFF) % PARTITIONS
               for k, p in zip(events.keys, events.partitions, strict=True))
    assert 900 < len(events.outputs(2_000)) < 1_100
    assert events.outputs(10) == [n for n in range(10) if views[n]["duration_ms"] >= 1000]


def _write_outputs(folder: Path, views: list[dict[str, object]]) -> None:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta, view in enumerate(views):
        builder.append(delta, 0, str(view["user"]).encode(), orjson.dumps(view), [])
    with Log.open(folder) as log:
        log.partition(OUTPUT_TOPIC, 0).append(builder.build())


def test_the_output_check_wants_every_expected_output_exactly_once(tmp_path: Path) -> None:
    events = build_events(200)
    expected = events.outputs(200)
    views = [reshape(orjson.loads(events.values[n])) for n in expected]
    exact, duplicated = tmp_path / "exact", tmp_path / "duplicated"
    for folder, outputs in ((exact, views), (duplicated, [*views, views[0]])):
        load_log(str(folder), events, 200)
        _write_outputs(folder, outputs)
    check_output(str(exact), expected)
    with pytest.raises(RunFailed, match="holds 101 events"):
        check_output(str(duplicated), expected[:100])
    with pytest.raises(RunFailed, match="holds"):
        check_output(str(duplicated), expected)


def test_a_tiny_run_of_streamer_embedded(tmp_path: Path) -> None:
    report = run_pipeline_benchmark(
        pipelines=["streamer-embedded"], events=500, faust_events=500, runs=1,
        data_dir=str(tmp_path), profile_dir=None, as_json=True,
        console=Console(file=io.StringIO()),
    )
    assert report["failures"] == 0, report["measurements"]
    (m,) = report["measurements"]
    assert m["runs"] == 1 and m["events_per_s_median"] > 0
    assert m["durable_seconds"][0] >= m["seconds"][0] >= m["first_output_seconds"][0] > 0
    assert report["ratios"] == []  # no quixstreams to compare with


@pytest.mark.skipif(not _installed("confluent_kafka"), reason="needs confluent-kafka")
def test_a_tiny_run_of_every_pipeline(tmp_path: Path) -> None:
    pipelines = ["streamer-embedded", "streamer-kafka"]
    pipelines += [name for name, module in (("quixstreams", "quixstreams"), ("faust", "faust"))
                  if _installed(module)]
    output = io.StringIO()
    report = run_pipeline_benchmark(
        pipelines=pipelines, events=400, faust_events=100, runs=1, data_dir=str(tmp_path),
        profile_dir=None, as_json=False, console=Console(file=output, width=100),
    )
    assert report["failures"] == 0, report["measurements"]
    rows = {m["pipeline"]: m for m in report["measurements"]}
    assert list(rows) == pipelines
    for m in rows.values():
        assert m["runs"] == 1 and m["events_per_s_median"] > 0
        assert m["outputs"] == len(build_events(m["events"]).outputs(m["events"]))
    if "faust" in rows:
        assert rows["faust"]["events"] == 100
        assert any("faust-streaming ran on the first 100 events" in n for n in report["notes"])
    if "quixstreams" in rows:
        ratios = {r["pipeline"]: r for r in report["ratios"]}
        assert ratios["streamer-embedded"]["goal"] == 3.0
        assert ratios["streamer-kafka"]["goal"] == 1.0
        assert all(r["ratio"] > 0 for r in ratios.values())
    assert "streamer bench pipeline" in output.getvalue()
