"""An exactly-once worker SIGKILLed at random moments, again and again, on both transports:
its output and its table still equal the oracle exactly.

The app (``tests/streamer/apps/eos_counter.py``) counts 200,000 keyed events into a RocksDB
table and sends, for each event, ``"<key> <count>"`` to an output topic, in transactions
(``processing_guarantee="exactly_once"``). Its ``streamer worker`` process is killed with
SIGKILL :data:`KILLS` times, each time a random while after it started processing, and
restarted on the same state folder (its transactional id comes back with it and aborts what
the killed one left open). A last run finishes. Then, with ``read_committed``:

- the output holds, for each key with n events, the counts 1, 2, ... n, each exactly once
  (nothing the killed workers did twice, and nothing they lost);
- the table's changelog holds each key's n.

Embedded, the worker owns the log folder; on kafka, it runs against a ``streamer broker``
subprocess. The aborted records the kills left behind are in the log (read_uncommitted sees
them) and reported.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streamer.events import Event
from streamer.partitioner import KeyPartitioner
from streamer.transport import open_transport
from tests.broker_process import log_url
from tests.streamer.apps import eos_counter
from tests.streamer.running import WorkerProcess, committed_offsets, produce, read_all, run

EVENTS = 200_000
KEYS = [f"k{i:03d}" for i in range(500)]
PARTITIONS = eos_counter.PARTITIONS
KILLS = 10
PACE_PER_S = 2_000  # per partition: 8,000 events/s, so every kill lands mid-stream
KILL_AFTER_S = (0.3, 2.0)  # a kill comes this long (uniformly) after the worker runs
SPEC = "tests.streamer.apps.eos_counter:app"
APP = "eos-counter"
CHANGELOG = f"{APP}-counts-changelog"
START_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 90.0
SCENARIO_TIMEOUT_S = 170.0

_partitioner = KeyPartitioner()
_read = functools.partial(read_all, partitions=PARTITIONS)  # every record of a topic


def _keys() -> list[str]:
    rng = random.Random(7)
    return [rng.choice(KEYS) for _ in range(EVENTS)]


async def _committed(protocol_url: str) -> int:
    return sum(max(o, 0) for o in await committed_offsets(
        protocol_url, APP, eos_counter.INPUT, PARTITIONS))


def _check_output(events: list[Event], expected: Counter[str]) -> None:
    counts: dict[str, list[int]] = defaultdict(list)
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        key, n = event.value.decode().split()
        assert event.key == key.encode()
        counts[key].append(int(n))
    for key, n in expected.items():
        assert counts[key] == list(range(1, n + 1)), (
            key, n, len(counts[key]), counts[key][:5], counts[key][-5:])
    assert set(counts) == set(expected)


async def _scenario(url: str, tmp_path: Path, keys: list[str], seed: int
                    ) -> tuple[list[int], int, int]:
    rng = random.Random(seed)
    await produce(url, eos_counter.INPUT, ((k.encode(), k.encode()) for k in keys),
                  partitions=PARTITIONS,
                  partition_of=lambda i: _partitioner.partition(keys[i].encode(), PARTITIONS))
    env = {"EOS_COUNTER_STATE": str(tmp_path / "state"), "EOS_COUNTER_PACE": str(PACE_PER_S)}
    before_kills: list[int] = []
    workers: list[WorkerProcess] = []
    try:
        for _ in range(KILLS):
            worker = WorkerProcess(SPEC, url, env=env)
            workers.append(worker)
            protocol_url = await worker.protocol_url(url, START_TIMEOUT_S)
            await asyncio.sleep(rng.uniform(*KILL_AFTER_S))
            before_kills.append(await _committed(protocol_url))
            assert worker.process.poll() is None, worker.output
            worker.kill()
            assert worker.process.returncode == -9
        last = WorkerProcess(SPEC, url, env=env)
        workers.append(last)
        protocol_url = await last.protocol_url(url, START_TIMEOUT_S)
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while await _committed(protocol_url) < EVENTS:
            assert time.monotonic() < deadline, f"not every event committed:\n{last.output}"
            assert last.process.poll() is None, last.output
            await asyncio.sleep(0.25)
        assert last.terminate() == 0, last.output
    finally:
        for worker in workers:
            worker.kill()
    transport = open_transport(url, app_id="eos-kill-check", listen=None)
    await transport.start()
    try:
        outputs = await _read(transport, eos_counter.OUTPUT, committed=True)
        written = len(await _read(transport, eos_counter.OUTPUT, committed=False))
        changelog = await _read(transport, CHANGELOG, committed=True)
    finally:
        await transport.close()
    expected = Counter(keys)
    _check_output(outputs, expected)
    latest: dict[str, int] = {}
    for event in sorted(changelog, key=lambda e: (e.partition, e.offset)):
        latest[event.key.decode()] = int(event.value)
    assert latest == dict(expected)
    return before_kills, len(outputs), written


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["embedded", "kafka"])
def test_an_exactly_once_worker_killed_again_and_again_equals_the_oracle(
    transport: str, tmp_path: Path, record_property: object,
) -> None:
    keys = _keys()
    seed = random.randrange(1 << 30)
    started = time.monotonic()
    with log_url(transport, tmp_path) as url:
        before_kills, visible, written = run(_scenario(url, tmp_path, keys, seed),
                                             SCENARIO_TIMEOUT_S)
    # Every kill landed mid-stream: some events were committed before it, not all.
    assert all(0 <= committed < EVENTS for committed in before_kills), before_kills
    assert len(before_kills) == KILLS
    print(f"\n{transport}: {EVENTS} events, {KILLS} SIGKILLs (seed {seed}) with "
          f"{before_kills} events committed before each; {visible} outputs visible, exactly "
          f"the oracle; {written - visible} aborted records in the log; "
          f"{time.monotonic() - started:.0f} s")
