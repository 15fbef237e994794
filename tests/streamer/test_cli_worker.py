"""``streamer worker MODULE:APP --broker URL`` as a subprocess, on both transports: readable
log lines, a clean stop on SIGTERM that commits first (exit 0), and a failing agent that
ends the process with one line naming where it failed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.streamer.apps import copier
from tests.streamer.running import (
    Target,
    WorkerProcess,
    committed_offsets,
    produce,
    read_topic,
    run,
    wait_until,
)

EVENTS = 3_000


def test_sigterm_stops_the_worker_after_it_committed(target: Target) -> None:
    async def scenario() -> tuple[WorkerProcess, int, list[int], list[bytes]]:
        await produce(target.url, "copier-in",
                      ((f"k{n}".encode(), str(n).encode()) for n in range(EVENTS)),
                      partitions=copier.PARTITIONS)
        worker = WorkerProcess("tests.streamer.apps.copier:app", target.url,
                               env={"COPIER_PROGRESS_EVERY": "500"})
        try:
            await worker.wait_for_line(rf"copied {EVENTS} events", timeout_s=30)
            code = worker.terminate()
        finally:
            worker.kill()
        committed = await committed_offsets(target.url, "copier", "copier-in",
                                            copier.PARTITIONS)
        copied = await read_topic(target.url, "copier-out", at_least=EVENTS)
        return worker, code, committed, [event.value for event in copied]

    worker, code, committed, copied = run(scenario(), timeout_s=90)
    assert code == 0, worker.output
    assert sum(committed) == EVENTS and min(committed) > 0, committed
    assert sorted(copied, key=int) == [str(n).encode() for n in range(EVENTS)]
    output = worker.output
    assert "Traceback" not in output, output
    assert _continuation_lines(output) == [], output
    assert worker.find(r"INFO +worker of copier running on "), output
    assert worker.find(r"INFO +assigned .*copier-in\[0\]"), output
    assert worker.find(r"INFO +worker of copier stopped \(\d+ commits\)"), output


def test_a_failing_agent_exits_non_zero_with_one_line(target: Target) -> None:
    async def scenario() -> tuple[WorkerProcess, int]:
        worker = WorkerProcess("tests.streamer.apps.failing:app", target.url)
        try:
            await wait_until(lambda: worker.process.poll() is not None,
                             "the failing worker to exit", timeout_s=30)
        finally:
            worker.kill()
        return worker, worker.process.returncode

    worker, code = run(scenario())
    output = worker.output
    assert code == 1, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last == ("Error: agent total failed on failing-orders[0] offset 0: "
                    "KeyError: 'quantity'"), output


@pytest.mark.parametrize(("spec", "message"), [
    ("tests.streamer.apps.nowhere:app", "Error: cannot import 'tests.streamer.apps.nowhere'"),
    ("tests.streamer.apps.copier:inputs", "Error: tests.streamer.apps.copier:inputs: 'inputs' "
                                          "in tests.streamer.apps.copier is not a streamer.App"),
])
def test_a_wrong_app_spec_is_one_line(spec: str, message: str) -> None:
    worker = WorkerProcess(spec, "memory://")
    code = worker.process.wait(30)
    worker.kill()  # gone already: this collects the rest of its output
    assert code != 0
    assert worker.output.strip().splitlines()[-1].startswith(message), worker.output
    assert "Traceback" not in worker.output


def test_each_log_record_is_one_line_without_a_terminal() -> None:
    worker = WorkerProcess("tests.streamer.apps.failing:app", "memory://", columns=None)
    worker.process.wait(30)
    worker.kill()
    assert _continuation_lines(worker.output) == [], worker.output


def _continuation_lines(output: str) -> list[str]:
    """Lines that do not start a log record (a record is one line when not on a terminal)."""
    record = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) |^Error: ")
    return [line for line in output.splitlines() if line.strip() and not record.match(line)]


def test_state_dir_puts_the_table_stores_there(tmp_path: Path) -> None:
    state = tmp_path / "tables-here"

    async def scenario() -> WorkerProcess:
        worker = WorkerProcess("examples.word_count:app", str(tmp_path / "log"),
                               args=["--state-dir", str(state)])
        try:
            await worker.wait_for_line(r"worker of word-count running", timeout_s=30)
            code = worker.terminate()
        finally:
            worker.kill()
        assert code == 0, worker.output
        return worker

    worker = run(scenario())
    assert worker.find(rf"table state in {re.escape(str(state))}/worker-0"), worker.output
    assert (state / "worker-0").is_dir()
