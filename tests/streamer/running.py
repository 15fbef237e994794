"""Running apps in tests, on either transport.

- :class:`Target`: where a test's log is: ``embedded`` (a folder, the log in the test's own
  process) or ``kafka`` (a ``streamer broker`` subprocess, reached over the Kafka protocol).
- :func:`running`: ``app.run()`` as a background task, started and stopped around a block.
- :func:`wait_until`: poll a condition with a deadline (never a fixed sleep).
- :func:`produce`, :func:`read_topic`, :func:`committed_offsets`: the log as seen from
  outside the app under test, through a transport of its own.
- :class:`WorkerProcess`: ``streamer worker MODULE:APP`` as a subprocess, its output kept.

pytest-asyncio is not used: each test runs its scenario with :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import streamer
from streamer.events import Event, Headers, TopicPartition
from streamer.transport import TopicSpec, Transport, open_transport

__all__ = [
    "REPO_ROOT",
    "Running",
    "Target",
    "WorkerProcess",
    "committed_offsets",
    "produce",
    "read_topic",
    "run",
    "running",
    "wait_until",
]

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT_S = 60.0
WAIT_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.02
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
READ_IDLE_S = 1.0  # read_topic: no new event for this long after the expected count: done
FETCH_TIMEOUT_MS = 100
READER_JOIN_TIMEOUT_S = 5.0  # a worker's output after it exited: read to the end
FETCH_RECORDS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class Target:
    """A log for one test: ``kind`` is "embedded" or "kafka"; ``url`` is what apps get."""

    kind: str
    url: str

    @property
    def embedded(self) -> bool:
        return self.kind == "embedded"


def run(scenario: Coroutine[Any, Any, T], timeout_s: float = SCENARIO_TIMEOUT_S) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, timeout_s)

    return asyncio.run(bounded())


class Running:
    """An app running in this process; :meth:`wait` fails fast if the worker stopped."""

    def __init__(self, app: streamer.App, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.app = app
        self.task = task
        self.stop = stop

    async def wait(
        self, condition: Callable[[], object], what: str, timeout_s: float = WAIT_TIMEOUT_S
    ) -> None:
        await wait_until(condition, what, timeout_s, task=self.task)


@contextlib.asynccontextmanager
async def running(app: streamer.App, target: Target | str) -> AsyncIterator[Running]:
    """Run ``app`` until the block ends; the block starts once its worker consumes."""
    url = target.url if isinstance(target, Target) else target
    stop = asyncio.Event()
    task = asyncio.ensure_future(app.run(broker=url, stop=stop))
    handle = Running(app, task, stop)
    try:
        await wait_until(
            lambda: app.worker is not None and app.worker.consuming,
            f"a worker of {app.id} consuming", START_TIMEOUT_S, task=task,
        )
        yield handle
    finally:
        if not task.done():
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout_s: float = WAIT_TIMEOUT_S,
    *,
    task: asyncio.Future[Any] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``, or at
    once if ``task`` (a running worker) ended first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if task is not None and task.done():
            error = None if task.cancelled() else task.exception()
            raise AssertionError(f"the worker stopped before {what}: {error!r}") from error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


# -- the log from outside the app ------------------------------------------------------------


Record = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Headers]


async def produce(
    url: str,
    topic: str,
    records: Iterable[Record],
    *,
    partitions: int | None = None,
    partition_of: Callable[[int], int] | None = None,
) -> int:
    """Create ``topic`` if missing and write ``(key, value[, headers])`` records to it
    (record ``i`` to ``partition_of(i)``, default round-robin); returns how many. The
    embedded log must not be open elsewhere (no worker of it running)."""
    transport = open_transport(url, app_id="test-producer", listen=None)
    await transport.start()
    try:
        count = (await transport.ensure_topics([TopicSpec(topic, partitions)]))[topic]
        written = 0
        now_ms = int(time.time() * 1000)
        for index, record in enumerate(records):
            headers: Headers = record[2] if len(record) == 3 else ()
            partition = partition_of(index) if partition_of else index % count
            await transport.send(topic, partition, record[0], record[1], headers, now_ms)
            written += 1
        await transport.flush()
        return written
    finally:
        await transport.close()


async def read_all(transport: Transport, topic: str, partitions: int, *,
                   committed: bool = True, timeout_s: float = 60) -> list[Event]:
    """Every record of ``topic`` below its end offsets as they are now, through a reader of
    ``transport``: read_committed (no aborted records, no markers) or read_uncommitted."""
    reader = transport.reader(
        isolation_level="read_committed" if committed else "read_uncommitted")
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        ends = await reader.end_offsets(tps)
        reader.assign(dict.fromkeys(tps, 0))
        events: list[Event] = []
        deadline = time.monotonic() + timeout_s
        while not all([await reader.position(tp) >= ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, f"{topic}: not read to {ends} in {timeout_s} s"
            for tp, batch in await reader.fetch(FETCH_TIMEOUT_MS, FETCH_RECORDS_MAX):
                events.extend(event for event in batch if event.offset < ends[tp])
        return events
    finally:
        await reader.close()


async def read_topic(url: str, topic: str, *, at_least: int, timeout_s: float = 30,
                     isolation_level: str | None = None) -> list[Event]:
    """Every event of ``topic`` (raw bytes), read by a group of its own: waits for
    ``at_least`` events, then until nothing new came for a while."""
    transport = open_transport(url, app_id="test-reader", listen=None)
    await transport.start()
    consumer = transport.consumer(f"test-reader-{time.monotonic_ns()}", [topic], _NoListener(),
                                  isolation_level=isolation_level)
    events: list[Event] = []
    try:
        await consumer.start()
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            for _, batch in await consumer.fetch(FETCH_TIMEOUT_MS, FETCH_RECORDS_MAX):
                events.extend(batch)
                last_new = time.monotonic()
            if len(events) >= at_least and time.monotonic() - last_new > READ_IDLE_S:
                return events
        raise AssertionError(f"{topic}: {len(events)} events after {timeout_s} s, "
                             f"expected at least {at_least}")
    finally:
        await consumer.close()
        await transport.close()


async def committed_offsets(url: str, group: str, topic: str, partitions: int) -> list[int]:
    """The offsets ``group`` committed for each partition of ``topic`` (-1: none). The
    embedded log must not be open elsewhere."""
    wanted = [TopicPartition(topic, p) for p in range(partitions)]
    if url.startswith("kafka://"):
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        admin = AIOKafkaAdminClient(bootstrap_servers=url.removeprefix("kafka://"))
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return [found[KafkaTopicPartition(*tp)].offset if KafkaTopicPartition(*tp) in found
                else -1 for tp in wanted]
    from streamer.transport.embedded import EmbeddedTransport

    transport = EmbeddedTransport(url, app_id="test-offsets", listen=None)
    await transport.start()
    try:
        fetched = transport.broker.groups.fetch_offsets(group, wanted)
        by_partition = {c.partition: c.offset for c in fetched.partitions}
        return [by_partition.get(p, -1) for p in range(partitions)]
    finally:
        await transport.close()


class _NoListener:
    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        pass


# -- streamer worker as a subprocess ---------------------------------------------------------


class WorkerProcess:
    """``streamer worker SPEC --broker URL`` with its output (stdout and stderr) collected."""

    def __init__(self, spec: str, broker: str, *, env: dict[str, str] | None = None,
                 args: Sequence[str] = (), columns: int | None = 200) -> None:
        """``columns``: the COLUMNS the worker sees (None: unset, as under a service
        manager), so that rich does not wrap the log lines tests look for."""
        command = [sys.executable, "-m", "streamer.cli.main", "worker", spec,
                   "--broker", broker, *args]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("COLUMNS", None)
        if columns is not None:
            environment["COLUMNS"] = str(columns)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=environment,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def find(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for line in list(self.lines) if (m := regex.search(line))]

    async def wait_for_line(self, pattern: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
        await wait_until(
            lambda: self.find(pattern) or self.process.poll() is not None,
            f"a line matching {pattern!r} from worker {self.pid}", timeout_s,
        )
        if not self.find(pattern):
            raise AssertionError(f"worker {self.pid} exited ({self.process.returncode}) "
                                 f"before printing {pattern!r}:\n{self.output}")

    async def protocol_url(self, url: str, timeout_s: float = WAIT_TIMEOUT_S) -> str:
        """Where the log this worker was given (``url``) answers the Kafka protocol, once the
        worker runs: ``url`` itself for kafka://, else the address it serves its embedded log
        at (it must own the folder)."""
        await self.wait_for_line(r"worker of \S+ running on", timeout_s)
        if url.startswith("kafka://"):
            return url
        # Logged just after the "running" line: it may not have been read yet.
        served = r"the log is served at (\S+)"
        await self.wait_for_line(served, timeout_s)
        return f"kafka://{self.find(served)[0].group(1)}"

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.pid} ignored SIGTERM:\n{self.output}") from None
        self._reader.join(READER_JOIN_TIMEOUT_S)
        return code

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(READER_JOIN_TIMEOUT_S)
