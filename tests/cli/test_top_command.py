"""``streamer top`` as a user runs it: against a worker of the word-count example (its
embedded log found through the folder's worker.json), as JSON, under tmux at 120×30, and
with no worker at all (what a ``streamer broker`` holds); the worker's Prometheus endpoint;
one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamer.statistics import WorkerSnapshot
from tests.broker_process import BrokerProcess
from tests.cli.test_client_commands import _free_port
from tests.streamer.running import REPO_ROOT, WorkerProcess, run
from tests.streamer.snapshots import read_snapshots

LINES = 2_000
RUN_TIMEOUT_S = 60
TMUX_WAIT_S = 20.0


@dataclass
class WordCount:
    worker: WorkerProcess
    folder: Path
    bootstrap: str
    metrics_port: int


def _top(*args: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "streamer.cli.main", "top", *args],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO_ROOT,
                            env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


async def _produce_lines(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for n in range(LINES):
            await producer.send("word-count-lines", f"line {n} of the quick brown fox".encode(),
                                key=str(n).encode())
        await producer.flush()
    finally:
        await producer.stop()


def _count_words(snap: WorkerSnapshot) -> int:
    return next((a.events_in for a in snap.agents if a.name == "count_words"), 0)


@pytest.fixture(scope="module")
def word_count(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordCount]:
    """A worker of examples/word_count.py that has counted LINES lines."""
    folder = tmp_path_factory.mktemp("word-count") / "log"
    port = _free_port()
    worker = WorkerProcess("examples.word_count:app", str(folder),
                           args=["--metrics-port", str(port)])

    async def started() -> str:
        await worker.wait_for_line(r"the log is served at", timeout_s=30)
        (match,) = worker.find(r"the log is served at (\S+):(\d+)")
        bootstrap = f"{match[1]}:{match[2]}"
        await _produce_lines(bootstrap)

        async def counted() -> bool:
            snapshots = await read_snapshots(bootstrap)
            return any(_count_words(s) == LINES for s in snapshots.values())

        deadline = time.monotonic() + 30
        while not await counted():
            assert time.monotonic() < deadline, worker.output
            await asyncio.sleep(0.2)
        return bootstrap

    try:
        bootstrap = run(started())
        yield WordCount(worker, folder, bootstrap, port)
    finally:
        worker.terminate()
        worker.kill()


def test_once_json_shows_partitions_with_lag_and_agents_with_counts(
    word_count: WordCount,
) -> None:
    result = _top("--broker", str(word_count.folder), "--once", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["app"] == "word-count" and document["log"] is None
    (worker,) = document["workers"]
    assert worker["state"] == "running" and worker["pid"] == word_count.worker.pid
    lines = [p for p in worker["partitions"] if p["topic"] == "word-count-lines"]
    assert [p["partition"] for p in lines] == [0, 1, 2, 3]
    assert sum(p["end_offset"] for p in lines) == LINES
    for partition in worker["partitions"]:
        done = partition["processed_offset"] or partition["committed_offset"] or 0
        assert partition["lag"] == partition["end_offset"] - done, partition
    assert {p["topic"] for p in worker["partitions"]} == {"word-count-lines",
                                                           "word-count-word-repartition"}
    (agent,) = worker["agents"]
    assert (agent["name"], agent["events_in"], agent["errors"]) == ("count_words", LINES, 0)
    assert agent["processing_ms_p99"] is not None


def test_once_prints_the_frame_as_plain_tables(word_count: WordCount) -> None:
    result = _top("--broker", word_count.bootstrap, "--once")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(" word-count   1 worker  RUNNING")
    assert "PARTITIONS (BY LAG)" in text and "word-count-lines[3]" in text
    assert "count_words" in text and "\x1b[" not in text  # no colours off a terminal


def test_top_under_tmux_shows_the_header_partitions_and_keys(word_count: WordCount,
                                                            tmp_path: Path) -> None:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed (.ci/run installs it; apt-get install tmux)")
    server = f"streamer-top-{os.getpid()}"  # a tmux server of our own, with our environment
    command = (f"cd {REPO_ROOT} && {sys.executable} -m streamer.cli.main top "
               f"--broker {word_count.folder} --refresh 0.5")
    base = [tmux, "-L", server, "-f", os.devnull]
    subprocess.run([*base, "new-session", "-d", "-s", "top", "-x", "120", "-y", "30", command],
                   check=True, timeout=RUN_TIMEOUT_S, env={**os.environ, "TERM": "xterm"})
    try:
        screen = _wait_for_screen(base, lambda text: "TOPIC[P]" in text and "q quit" in text)
        lines = screen.splitlines()
        assert len(lines) == 30 and max(len(line) for line in lines) <= 120
        assert lines[0].startswith(" word-count   1 worker  RUNNING"), screen
        assert any("word-count-lines[0]" in line for line in lines), screen
        assert any("count_words" in line for line in lines), screen
        assert lines[-1].startswith(" q quit  p pause  s sort:lag"), screen
        subprocess.run([*base, "send-keys", "-t", "top", "?"], check=True, timeout=10)
        _wait_for_screen(base, lambda text: "this help; any key closes it" in text)
        subprocess.run([*base, "send-keys", "-t", "top", "x", "q"], check=True, timeout=10)
        deadline = time.monotonic() + TMUX_WAIT_S
        while subprocess.run([*base, "has-session", "-t", "top"],
                             capture_output=True).returncode == 0:
            assert time.monotonic() < deadline, "streamer top did not quit on q"
            time.sleep(0.1)
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)


def _wait_for_screen(base: list[str], ready: Any) -> str:
    deadline = time.monotonic() + TMUX_WAIT_S
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run([*base, "capture-pane", "-p", "-t", "top"], capture_output=True,
                                text=True, timeout=10).stdout
        if ready(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"the screen never got there:\n{screen}")


def test_the_worker_serves_its_snapshot_to_prometheus(word_count: WordCount) -> None:
    url = f"http://127.0.0.1:{word_count.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    worker = f'worker="word-count@{socket.gethostname()}:{word_count.worker.pid}"'
    assert (f'streamer_agent_events_in_total{{agent="count_words",app="word-count",{worker}}} '
            f"{float(LINES)}") in text.splitlines()
    assert 'streamer_partition_lag{app="word-count",partition="0",topic="word-count-lines",' \
        in text
    assert 'streamer_worker_info{app="word-count"' in text


def test_with_no_worker_it_shows_what_the_log_holds(broker: BrokerProcess) -> None:
    async def fill() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("orders", 2, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for n in range(10):
                await producer.send("orders", b"x", partition=n % 2)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="billing",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition("orders", 0)])
            await consumer.commit({TopicPartition("orders", 0): OffsetAndMetadata(2, "")})
        finally:
            await consumer.stop()

    run(fill())
    text = _top("--broker", broker.bootstrap, "--once", columns=100)
    assert text.returncode == 0, text.stderr
    assert "no worker running" in text.stdout.splitlines()[0]
    assert "No worker publishes statistics to __streamer_workers" in text.stdout
    rows = {line.split()[0]: line.split()[1:] for line in text.stdout.splitlines()
            if line.startswith("orders[")}
    assert rows == {"orders[0]": ["0", "5", "billing", "2", "3"],
                    "orders[1]": ["0", "5", "–", "–", "–"]}, text.stdout
    assert any(line.split()[:4] == ["billing", "Empty", "0", "3"]
               for line in text.stdout.splitlines()), text.stdout
    document = json.loads(_top("--broker", broker.bootstrap, "--json").stdout)
    assert document["workers"] == [] and document["app"] is None
    (group,) = document["log"]["groups"]
    assert group["group"] == "billing" and group["offsets"] == [
        {"topic": "orders", "partition": 0, "committed_offset": 2, "lag": 3}]
    assert [p["end_offset"] for p in document["log"]["partitions"]] == [5, 5]


def test_errors_are_one_line(tmp_path: Path) -> None:
    refused = _top("--broker", f"127.0.0.1:{_free_port()}", "--once", "--request-timeout", "3")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: cannot reach a broker at 127.0.0.1:"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    folder = tmp_path / "log"
    folder.mkdir()
    missing = _top("--broker", str(folder), "--once")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"Error: no worker serves the log in {folder} (no address in {folder}/worker.json): "
        "start one with streamer worker, or pass --broker HOST:PORT")
