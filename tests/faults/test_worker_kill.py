"""Three ``streamer worker`` processes share a topic of 8 partitions; one is killed with
SIGKILL mid-way; every event is still processed at least once, nothing lost.

The app (``tests/streamer/apps/copier.py``) copies each event of ``copier-in`` to
``copier-out``, so the output topic is the durable record of what was processed. The three
workers form one group first; then 20,000 events are produced; once the victim has copied a
share, it is killed: no flush, no commit, no goodbye. The other two take its partitions over
when its session times out (10 s) and resume at its last committed offsets. At the end every
input event is in the output at least once; the copies beyond one (work the victim did after
its last commit, done again) are counted and reported.

On the embedded log the first worker owns the folder and serves it on loopback, and the
other two, started on the same folder, find it in use and join over the Kafka protocol; the
victim is one of those (killing the owner takes the log with it, by design).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.broker_process import running_broker
from tests.streamer.apps import copier
from tests.streamer.running import (
    WorkerProcess,
    committed_offsets,
    produce,
    read_topic,
    run,
    wait_until,
)

EVENTS = 20_000
PACE_PER_S = 2_000  # per worker: the run lasts seconds, so the kill lands mid-way
PROGRESS_EVERY = 500
VICTIM_COPIED_BEFORE_KILL = 1_000
GROUP_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 60.0  # includes the victim's session timeout (10 s)
SCENARIO_TIMEOUT_S = 150.0
WORKER_ENV = {"COPIER_PACE": str(PACE_PER_S), "COPIER_PROGRESS_EVERY": str(PROGRESS_EVERY)}
SPEC = "tests.streamer.apps.copier:app"
LOG_COLUMNS = 400  # an "assigned" line names up to 9 partitions: keep it on one line
ASSIGNED = re.compile(r"INFO +assigned (.*)$")
COPIED = re.compile(r"copied (\d+) events")


def _input_partitions(worker: WorkerProcess) -> set[int]:
    """The partitions of ``copier-in`` in the worker's latest assignment."""
    found = worker.find(ASSIGNED.pattern)
    if not found:
        return set()
    return {int(p) for p in re.findall(r"copier-in\[(\d+)\]", found[-1].group(1))}


def _copied(worker: WorkerProcess) -> int:
    found = worker.find(COPIED.pattern)
    return int(found[-1].group(1)) if found else 0


def _split_between(workers: list[WorkerProcess]) -> bool:
    """Every partition of ``copier-in`` is owned, each by one of ``workers``, all busy."""
    shares = [_input_partitions(worker) for worker in workers]
    owned = [p for share in shares for p in share]
    return all(shares) and sorted(owned) == list(range(copier.PARTITIONS))


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["kafka", "embedded"])
def test_sigkill_of_one_worker_of_three_loses_nothing(
    transport: str, tmp_path: Path, record_property: Callable[[str, object], None],
) -> None:
    if transport == "kafka":
        with running_broker(tmp_path / "broker-data") as broker:
            url = f"kafka://{broker.bootstrap}"
            outcome = run(_scenario(url, url), SCENARIO_TIMEOUT_S)
    else:
        folder = str(tmp_path / "log")
        outcome = run(_scenario(folder, None), SCENARIO_TIMEOUT_S)
    copies, copied_at_kill = outcome
    duplicates = sum(copies.values()) - EVENTS
    record_property("duplicates", duplicates)
    print(f"\n{transport}: {EVENTS} events, {sum(copies.values())} copies, "
          f"{duplicates} duplicates; killed after {copied_at_kill} of them were copied")
    assert set(copies) == {str(n).encode() for n in range(EVENTS)}, "events lost"
    assert copied_at_kill < EVENTS, "the kill came after the work was done"


async def _scenario(url: str, protocol_url: str | None) -> tuple[Counter[bytes], int]:
    """``url``: what workers are given; ``protocol_url``: where the log answers the Kafka
    protocol (None: the first worker's served address, once it is up)."""
    workers: list[WorkerProcess] = []
    try:
        first = WorkerProcess(SPEC, url, env=WORKER_ENV, columns=LOG_COLUMNS)
        workers.append(first)
        if protocol_url is None:
            await first.wait_for_line(r"the log is served at ", GROUP_TIMEOUT_S)
            host_port = first.find(r"the log is served at (\S+)")[0].group(1)
            protocol_url = f"kafka://{host_port}"
        else:
            await first.wait_for_line(r"worker of copier running on", GROUP_TIMEOUT_S)
        workers += [WorkerProcess(SPEC, url, env=WORKER_ENV, columns=LOG_COLUMNS)
                    for _ in range(2)]
        await wait_until(lambda: _split_between(workers), "three workers sharing copier-in",
                         GROUP_TIMEOUT_S)
        survivors, victim = workers[:2], workers[2]

        await produce(protocol_url, "copier-in",
                      ((str(n).encode(), str(n).encode()) for n in range(EVENTS)),
                      partitions=copier.PARTITIONS)
        await wait_until(lambda: _copied(victim) >= VICTIM_COPIED_BEFORE_KILL,
                         "the victim under way", GROUP_TIMEOUT_S)
        victim.kill()
        copied_at_kill = sum(_copied(worker) for worker in workers)
        assert victim.process.returncode == -9

        await wait_until(lambda: _split_between(survivors), "the survivors taking over",
                         CATCH_UP_TIMEOUT_S)
        await _wait_until_committed(protocol_url, EVENTS, CATCH_UP_TIMEOUT_S)
        for worker in reversed(survivors):  # the embedded log's owner last
            assert worker.terminate() == 0, worker.output
    finally:
        for worker in reversed(workers):
            worker.kill()
    copies = await read_topic(url, "copier-out", at_least=EVENTS)
    return Counter(event.value for event in copies), copied_at_kill


async def _wait_until_committed(protocol_url: str, events: int, timeout_s: float) -> None:
    """Until the group committed every input offset: the outputs of all of them were flushed
    before (a checkpoint flushes, then commits)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        committed = await committed_offsets(protocol_url, "copier", "copier-in",
                                            copier.PARTITIONS)
        if sum(max(offset, 0) for offset in committed) >= events:
            return
        if loop.time() > deadline:
            raise AssertionError(f"committed {committed} after {timeout_s} s")
        await asyncio.sleep(0.5)
