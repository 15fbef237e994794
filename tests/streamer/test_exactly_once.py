"""Exactly-once processing (``processing_guarantee="exactly_once"``) on both transports.

The app under test counts keyed events into a table and sends, for each event, the key's new
count to an output topic, so the output says exactly what was counted: per key, the counts
1, 2, ... n, each once. Input, output and table are partitioned alike (4 partitions, keyed),
so the outputs of key k come from k's input partition only. Read with ``read_committed``:

- a checkpoint makes the outputs, the changelog records and the input offsets of the
  events before it visible together: while a transaction is open, what is visible is exactly
  what the committed offsets say was processed;
- an aborted transaction (a write the log refuses once; an agent that fails under the
  ``raise`` policy, after sending its event's output) leaves nothing visible, and the work
  is done again, once;
- a worker fenced by a newer producer with its transactional id stops and never commits
  again; a restart resumes from the committed state, its tables restored from the
  committed changelog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

import streamer
from streamer.errors import StreamerError
from streamer.events import Event, TopicPartition
from streamer.exactly_once import TRANSACTIONAL_ID_FILE
from streamer.partitioner import KeyPartitioner
from streamer.testing import AppRunner
from streamer.transport import Transport, open_transport
from streamer.transport.embedded import EmbeddedTransport
from streamer.transport.embedded_transactions import EmbeddedTransactions
from tests.streamer.running import (
    REPO_ROOT,
    Target,
    WorkerProcess,
    committed_offsets,
    produce,
    read_all,
    run,
    running,
)

PARTITIONS = 4
KEYS = [f"k{i:02d}" for i in range(20)]
INPUT, OUTPUT = "events", "counts-out"
PACE_EVERY, PACE_S = 20, 0.01
_partitioner = KeyPartitioner()
_read = functools.partial(read_all, partitions=PARTITIONS)  # every record of a topic


def _keys(n: int, start: int = 0) -> list[str]:
    return [KEYS[(i * 7 + i // 50) % len(KEYS)] for i in range(start, start + n)]


class _Hooks:
    """What the scenario does to the agent: hold it before its first event
    (``hold_first``) or in event ``hold_at`` (once its output is sent), fail on event
    ``fail_at`` (once its output is sent), send one record too large for the output topic
    with event ``too_large_at`` (once)."""

    def __init__(self) -> None:
        self.processed = 0
        self.hold_first = False
        self.hold_at = -1
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_at = -1
        self.too_large_at = -1
        self.pace_s = PACE_S  # the pause every PACE_EVERY events


def _app(app_id: str, state_dir: Path, hooks: _Hooks, *, commit_interval_s: float = 0.2,
         ) -> tuple[streamer.App, Any]:
    app = streamer.App(app_id, state_dir=str(state_dir), commit_interval_s=commit_interval_s,
                       commit_every=1_000_000, processing_guarantee="exactly_once")
    events = app.topic(INPUT, value_type=str, partitions=PARTITIONS)
    out = app.topic(OUTPUT, value_type=dict, partitions=PARTITIONS,
                    config={"max.message.bytes": "20000"})
    counts = app.table("counts", default=int, partitions=PARTITIONS)

    @app.agent(events)
    async def count(stream: streamer.Stream) -> None:
        async for key in stream:
            index = hooks.processed
            if hooks.hold_first and index == 0:
                await _hold(hooks)  # before anything: the table as restored
            n = counts[key] + 1
            counts[key] = n
            if index == hooks.too_large_at:
                hooks.too_large_at = -1  # once: the replay sends the real output
                await out.send(key=key, value={"key": key, "pad": "x" * 30_000})
            await out.send(key=key, value={"key": key, "count": n})
            if index == hooks.hold_at:
                await _hold(hooks)  # mid-event, its output sent: no commit can take it
            if index == hooks.fail_at:
                raise RuntimeError(f"event {index} fails")  # its output and count sent
            hooks.processed += 1
            if hooks.processed % PACE_EVERY == 0:
                await asyncio.sleep(hooks.pace_s)  # a few checkpoints come in a run

    return app, counts


async def _hold(hooks: _Hooks) -> None:
    if not hooks.release.is_set():
        hooks.held.set()
        await hooks.release.wait()


async def _produce(url: str, keys: list[str]) -> None:
    await produce(url, INPUT, ((k.encode(), k.encode()) for k in keys), partitions=PARTITIONS,
                  partition_of=lambda i: _partitioner.partition(keys[i].encode(), PARTITIONS))


# -- the log, read from outside the app ------------------------------------------------------


@contextlib.asynccontextmanager
async def _transport(target: Target, app: streamer.App | None = None
                     ) -> AsyncIterator[Transport]:
    """The running app's own transport (the embedded log is its worker's), else a new one."""
    if app is not None and app.worker is not None and app.worker.transport is not None:
        yield app.worker.transport
        return
    transport = open_transport(target.url, app_id="test-eos-reader", listen=None)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


async def _committed(target: Target, transport: Transport, group: str) -> list[int]:
    if isinstance(transport, EmbeddedTransport):
        fetched = transport.broker.groups.fetch_offsets(
            group, [(INPUT, p) for p in range(PARTITIONS)])
        by_partition = {c.partition: c.offset for c in fetched.partitions}
        return [by_partition.get(p, -1) for p in range(PARTITIONS)]
    return await committed_offsets(target.url, group, INPUT, PARTITIONS)


async def _wait_committed(target: Target, app: streamer.App, events: int,
                          timeout_s: float = 30) -> None:
    """Until the running app committed every one of ``events`` input events."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with _transport(target, app) as transport:
        while sum(max(o, 0) for o in await _committed(target, transport, app.id)) < events:
            assert loop.time() < deadline, f"{app.id}: {events} events not committed in time"
            await asyncio.sleep(0.05)


def _counts_below(keys: list[str], committed: list[int]) -> Counter[str]:
    """Each key's events below the committed offsets of its partition."""
    seen = [0] * PARTITIONS
    counted: Counter[str] = Counter()
    for key in keys:
        partition = _partitioner.partition(key.encode(), PARTITIONS)
        if seen[partition] < max(committed[partition], 0):
            counted[key] += 1
        seen[partition] += 1
    return counted


def _outputs(events: list[Event]) -> dict[str, list[int]]:
    """Per key, the counts sent, in offset order (the output of one key is in one
    partition)."""
    import orjson

    by_key: dict[str, list[int]] = defaultdict(list)
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        value = orjson.loads(event.value)
        if "count" in value:
            by_key[value["key"]].append(value["count"])
    return dict(by_key)


def _exactly(counted: Counter[str]) -> dict[str, list[int]]:
    return {key: list(range(1, n + 1)) for key, n in counted.items() if n}


async def _changelog(transport: Transport, app_id: str) -> dict[str, int]:
    latest = {}
    for event in await _read(transport, f"{app_id}-counts-changelog"):
        latest[event.key.decode()] = int(event.value) if event.value is not None else None
    return {key: value for key, value in latest.items() if value is not None}


# -- the tests -------------------------------------------------------------------------------


def test_outputs_changelog_and_offsets_become_visible_together(
    target: Target, tmp_path: Path
) -> None:
    keys = _keys(600)
    hooks = _Hooks()
    hooks.hold_at = 400

    async def scenario() -> None:
        await _produce(target.url, keys)
        app, counts = _app("eos-atomic", tmp_path / "state", hooks)
        async with running(app, target) as worker:
            await worker.wait(hooks.held.is_set, "the agent held mid-stream")
            await asyncio.sleep(0.6)  # checkpoints come due and wait for the agent
            async with _transport(target, app) as transport:
                committed = await _committed(target, transport, app.id)
                visible = await _read(transport, OUTPUT)
                everything = await _read(transport, OUTPUT, committed=False)
                changelog = await _changelog(transport, app.id)
            below = _counts_below(keys, committed)
            assert 0 < sum(below.values()) <= 400, committed  # never the held event's
            assert _outputs(visible) == _exactly(below)  # nothing of the open transaction
            # The embedded log has the open transaction's records (the Kafka transport
            # ships its batches at the commit).
            assert len(everything) > len(visible) or not target.embedded
            assert changelog == dict(below)
            hooks.release.set()
            await _wait_committed(target, app, len(keys))
        async with _transport(target) as transport:
            assert await _committed(target, transport, app.id) == [
                sum(1 for k in keys if _partitioner.partition(k.encode(), PARTITIONS) == p)
                for p in range(PARTITIONS)]
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(Counter(keys))
            assert _outputs(await _read(transport, OUTPUT, committed=False)) == _exactly(
                Counter(keys))  # nothing aborted: nothing written twice
            assert await _changelog(transport, app.id) == dict(Counter(keys))

    run(scenario())


def test_an_aborted_transaction_leaves_nothing_visible_and_is_replayed(
    target: Target, tmp_path: Path
) -> None:
    keys = _keys(500)
    hooks = _Hooks()
    hooks.too_large_at = 300  # the log refuses it: the transaction aborts, once

    async def scenario() -> int:
        await _produce(target.url, keys)
        app, counts = _app("eos-abort", tmp_path / "state", hooks)
        async with running(app, target):
            await _wait_committed(target, app, len(keys))
            assert app.worker is not None and app.worker.exactly_once is not None
            aborts = app.worker.exactly_once.aborts
            assert counts.as_dict() == dict(Counter(keys))  # the caches went back to the stores
        async with _transport(target) as transport:
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(Counter(keys))
            written = await _read(transport, OUTPUT, committed=False)
            assert len(written) > len(keys)  # the aborted attempt is in the log, invisible
            assert await _changelog(transport, app.id) == dict(Counter(keys))
        return aborts

    assert run(scenario()) == 1


def test_an_agent_failure_aborts_its_transaction_and_a_restart_replays(
    target: Target, tmp_path: Path
) -> None:
    keys = _keys(300)
    hooks = _Hooks()
    hooks.fail_at = 200

    async def scenario() -> None:
        await _produce(target.url, keys)
        app, _ = _app("eos-fail", tmp_path / "state", hooks)
        with pytest.raises(streamer.AgentError, match="event 200 fails"):
            async with running(app, target) as worker:
                await asyncio.wait([worker.task], timeout=30)
        async with _transport(target) as transport:
            committed = await _committed(target, transport, app.id)
            below = _counts_below(keys, committed)
            assert sum(below.values()) <= 200  # never the failed event's offset
            # Nothing of the aborted transaction (the failed event's output included).
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(below)
            assert await _changelog(transport, app.id) == dict(below)
        hooks.fail_at = -1
        hooks.processed = 0
        again, _ = _app("eos-fail", tmp_path / "state", hooks)
        async with running(again, target):
            await _wait_committed(target, again, len(keys))
        async with _transport(target) as transport:
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(Counter(keys))

    run(scenario())


def test_rebalances_commit_before_partitions_move(target: Target, tmp_path: Path) -> None:
    """A second worker joins, takes half the partitions, and leaves again, while both
    count: each revocation commits first, so nothing is lost or counted twice."""
    keys = _keys(3_000)
    first, second = _Hooks(), _Hooks()
    first.pace_s = second.pace_s = 0.02  # per 20 events: the run outlasts the rebalances

    async def scenario() -> tuple[set[int], set[int]]:
        await _produce(target.url, keys)
        one, counts_one = _app("eos-shared", tmp_path / "state-one", first)
        two, counts_two = _app("eos-shared", tmp_path / "state-two", second)
        async with running(one, target):
            async with running(two, target) as joined:
                await joined.wait(lambda: bool(counts_one.active and counts_two.active),
                                  "both workers holding partitions", timeout_s=30)
                held = set(counts_one.active), set(counts_two.active)
                await joined.wait(lambda: second.processed > 100, "the second one counting")
            await _wait_committed(target, one, len(keys), timeout_s=60)
        return held

    held_one, held_two = run(scenario(), timeout_s=120)
    assert held_one and held_two and not held_one & held_two

    async def check() -> None:
        async with _transport(target) as transport:
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(Counter(keys))
            assert await _changelog(transport, "eos-shared") == dict(Counter(keys))

    run(check())


async def _fence(target: Target, app: streamer.App, transactional_id: str) -> Any:
    """A newer producer with the app's transactional id (what a restarted twin does)."""
    transport = app.worker.transport if app.worker is not None else None
    if isinstance(transport, EmbeddedTransport):
        newer = EmbeddedTransactions(transport.broker, transactional_id)
        await newer.init()
        return None
    producer = AIOKafkaProducer(bootstrap_servers=target.url.removeprefix("kafka://"),
                                transactional_id=transactional_id)
    await producer.start()
    await producer.begin_transaction()  # waits for InitProducerId
    return producer


def test_a_fenced_worker_stops_writing_and_a_restart_recovers(
    target: Target, tmp_path: Path
) -> None:
    keys = _keys(600)
    hooks = _Hooks()
    hooks.hold_at = 300

    async def scenario() -> None:
        await _produce(target.url, keys)
        app, counts = _app("eos-fenced", tmp_path / "state", hooks)
        newer = None
        with pytest.raises(StreamerError, match="fenced"):
            async with running(app, target) as worker:
                await worker.wait(hooks.held.is_set, "the agent held mid-stream")
                assert app.worker is not None and app.worker.exactly_once is not None
                transactional_id = app.worker.exactly_once.transactional_id
                async with _transport(target, app) as transport:
                    committed = await _committed(target, transport, app.id)
                newer = await _fence(target, app, transactional_id)
                hooks.release.set()  # its next commit finds it fenced
                await asyncio.wait([worker.task], timeout=30)
        if newer is not None:
            await newer.stop()
        state_file = tmp_path / "state" / "worker-0" / TRANSACTIONAL_ID_FILE
        assert state_file.read_text().strip() == transactional_id
        below = _counts_below(keys, committed)
        async with _transport(target) as transport:
            assert await _committed(target, transport, app.id) == committed  # nothing more
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(below)
            assert await _changelog(transport, app.id) == dict(below)
        hooks.processed, hooks.hold_at, hooks.hold_first = 0, -1, True
        hooks.held.clear()
        hooks.release.clear()
        again, counts = _app("eos-fenced", tmp_path / "state", hooks)
        async with running(again, target) as worker:
            await worker.wait(hooks.held.is_set, "the restarted agent at its first event")
            assert counts.as_dict() == dict(below)  # restored to the last commit, no further
            hooks.release.set()
            await _wait_committed(target, again, len(keys))
            assert again.worker is not None and again.worker.exactly_once is not None
            assert again.worker.exactly_once.transactional_id == transactional_id
        async with _transport(target) as transport:
            assert _outputs(await _read(transport, OUTPUT)) == _exactly(Counter(keys))
            assert await _changelog(transport, app.id) == dict(Counter(keys))

    run(scenario(), timeout_s=90)


def test_a_task_sending_outside_an_event_joins_the_next_commit(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    app = streamer.App("eos-task", state_dir=str(tmp_path / "state"), commit_interval_s=0.1,
                       processing_guarantee="exactly_once")
    events = app.topic(INPUT, value_type=str, partitions=1)
    notes = app.topic("notes", value_type=str, partitions=1)

    @app.agent(events)
    async def ignore(stream: streamer.Stream) -> None:
        async for _ in stream:
            pass

    @app.task
    async def note() -> None:
        await notes.send(value="hello")

    async def scenario() -> list[Event]:
        async with running(app, url) as worker:
            assert app.worker is not None and app.worker.transport is not None
            transport = app.worker.transport

            async def visible() -> list[Event]:
                return await _read_one(transport, "notes")

            found: list[Event] = []
            for _ in range(200):
                found = await visible()
                if found:
                    break
                await asyncio.sleep(0.02)
            await worker.wait(lambda: bool(found), "the task's record committed")
            return found

    assert [e.value for e in run(scenario())] == [b"hello"]


async def _read_one(transport: Transport, topic: str) -> list[Event]:
    reader = transport.reader(isolation_level="read_committed")
    tp = TopicPartition(topic, 0)
    try:
        end = (await reader.end_offsets([tp]))[tp]
        reader.assign({tp: 0})
        events: list[Event] = []
        while await reader.position(tp) < end:
            for _, batch in await reader.fetch(100, 100):
                events.extend(batch)
        return events
    finally:
        await reader.close()


def test_the_processing_guarantee_is_checked() -> None:
    with pytest.raises(StreamerError, match="'at_least_once' or 'exactly_once', not 'twice'"):
        streamer.App("eos-bad", processing_guarantee="twice")  # type: ignore[arg-type]
    assert streamer.App("eos-default").processing_guarantee == "at_least_once"


def test_streamer_worker_takes_the_processing_guarantee(tmp_path: Path) -> None:
    """``--processing-guarantee`` overrides the app's: the copier (at least once in its
    module) copies in transactions; a value that is neither is refused."""
    url = str(tmp_path / "log")
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)]

    async def scenario() -> list[Event]:
        await produce(url, "copier-in", records, partitions=8)
        worker = WorkerProcess("tests.streamer.apps.copier:app", url,
                               env={"COPIER_PROGRESS_EVERY": "100"},
                               args=["--processing-guarantee", "exactly_once",
                                     "--state-dir", str(tmp_path / "state")])
        try:
            await worker.wait_for_line(r"exactly-once: transactional id copier-")
            await worker.wait_for_line(r"copied 100 events")
        finally:
            assert worker.terminate() == 0, worker.output
        kept = tmp_path / "state" / "worker-0" / TRANSACTIONAL_ID_FILE
        assert kept.read_text().startswith("copier-")
        transport = open_transport(url, app_id="test-eos-cli", listen=None)
        await transport.start()
        try:
            reader = transport.reader(isolation_level="read_committed")
            return [e for p in range(8)
                    for e in await _read_partition(reader, "copier-out", p)]
        finally:
            await transport.close()

    copied = run(scenario())
    assert sorted((e.key, e.value) for e in copied) == sorted(records)
    refused = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", "worker", "tests.streamer.apps.copier:app",
         "--broker", "memory://", "--processing-guarantee", "twice"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
    )
    assert refused.returncode == 2 and "'twice' is not one of" in refused.stderr


async def _read_partition(reader: Any, topic: str, partition: int) -> list[Event]:
    tp = TopicPartition(topic, partition)
    end = (await reader.end_offsets([tp]))[tp]
    reader.assign({tp: 0})
    events: list[Event] = []
    while await reader.position(tp) < end:
        for _, batch in await reader.fetch(100, 1_000):
            events.extend(batch)
    reader.unassign([tp])
    return events


def test_app_runner_waits_for_an_exactly_once_app_past_its_transaction_markers() -> None:
    """Markers and aborted batches take offsets no agent sees: ``wait_idle`` looks past them."""
    app = streamer.App("eos-runner", broker="memory://", processing_guarantee="exactly_once")
    words = app.topic("words", value_type=str, partitions=2)
    out = app.topic("word-counts", value_type=int, partitions=2)
    counts = app.table("counts", default=int, partitions=2)

    @app.agent(words)
    async def count(stream: streamer.Stream) -> None:
        async for event in stream.events():
            counts[event.key] += 1
            await out.send(key=event.key, value=counts[event.key])

    async def scenario() -> list[tuple[str, int]]:
        async with AppRunner(app) as runner:
            for round_ in range(3):
                for word in ("a", "b", "c", "a"):
                    await runner.send(words, key=word, value=word)
                await runner.wait_idle()
                assert round_ < 2 or dict(counts.items()) == {"a": 6, "b": 3, "c": 3}
            return [(e.key, e.value) for e in runner.sent(out)]

    sent = run(scenario())
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, value in sent:
        by_key[key].append(value)
    assert by_key == {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3], "c": [1, 2, 3]}
