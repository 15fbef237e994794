"""Run an app in-process for tests: feed events, wait until they are processed, look at what
the agents sent, and drive timers with a manual clock::

    from streamer.testing import AppRunner

    async def test_popular_pages():
        async with AppRunner(app) as runner:
            await runner.send(views, key="u1", value={"page": "/", "duration_ms": 2000})
            await runner.wait_idle()
            assert [e.value["page"] for e in runner.sent(popular)] == ["/"]

The app runs a real worker over a ``memory://`` log (nothing served on a port). Timers do not
run on their own: ``await runner.advance(seconds)`` moves the manual clock and runs the timers
that came due, in order; ``runner.clock`` also stamps records sent without a timestamp.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatch

from .app import App
from .errors import StreamerError
from .events import Event, TopicPartition
from .log import PartitionLog
from .log.batch import split_batches
from .log.clock import ManualClock
from .timers import Crontab, Timer
from .topics import Topic
from .transport.embedded import EmbeddedTransport
from .worker import Worker

__all__ = ["AppRunner", "ManualClock"]

START_TIMEOUT_S = 30.0


class AppRunner:
    """A running worker of ``app`` on a fresh ``memory://`` log; use with ``async with``."""

    def __init__(self, app: App, *, clock: ManualClock | None = None) -> None:
        self.app = app
        self.clock = clock or ManualClock(time_ms=time.time_ns() // 1_000_000)
        self.worker = Worker(app, broker="memory://", listen=None, clock=self.clock,
                             run_timers=False)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer_due_ms: dict[int, int] = {}

    async def __aenter__(self) -> AppRunner:
        self._task = asyncio.ensure_future(self.worker.run(stop=self._stop))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.worker.consuming:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise StreamerError("the worker stopped before it started consuming")
            if time.monotonic() > deadline:
                raise StreamerError("the worker did not start")
            await asyncio.sleep(0.005)
        for timer in self.app.timers:
            self._timer_due_ms[id(timer)] = self.clock.time_ms() + _period_ms(timer)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the worker (committing); re-raises an agent's failure."""
        self._stop.set()
        if self._task is not None:
            await self._task

    @property
    def transport(self) -> EmbeddedTransport:
        transport = self.worker.transport
        assert isinstance(transport, EmbeddedTransport), "AppRunner runs on memory://"
        return transport

    async def send(
        self,
        topic: Topic,
        *,
        key: Any = None,
        value: Any = None,
        headers: dict[str, Any] | None = None,
        timestamp: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Write an input event to ``topic`` (as a producer outside the app would)."""
        await topic.send(key=key, value=value, headers=headers, timestamp=timestamp,
                         partition=partition)
        await self.transport.flush()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until every event in the topics the app reads is processed and what the
        agents sent is flushed (and, in turn, processed if the app reads it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._raise_if_failed()
            await self.worker.checkpoint()
            if self._caught_up():
                # What the last events sent is now flushed (committed, exactly once); it
                # may be input of the app's own agents.
                await self.worker.checkpoint()
                if self._caught_up():
                    return
            if time.monotonic() > deadline:
                raise StreamerError(f"the app was still busy after {timeout_s}s")
            await asyncio.sleep(0.005)

    def _caught_up(self) -> bool:
        worker = self.worker
        if not worker.inboxes_idle():
            return False
        log = self.transport.log
        processed = worker.processed_offsets()
        for topic in worker.routed_topics():
            for index in range(log.topic(topic).partitions):
                partition = log.partition(topic, index)
                end = partition.log_end_offset
                done = processed.get(TopicPartition(topic, index), 0)
                if end and done < end and not _only_markers(partition, done, end):
                    return False
        return True

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done():
            self._task.result()
            raise StreamerError("the worker stopped")

    def sent(self, topic: Topic | str) -> list[Event]:
        """Every record in ``topic`` so far, decoded with the topic's codecs, partition by
        partition in offset order."""
        declared = topic if isinstance(topic, Topic) else self.app.topics.get(topic)
        name = topic.name if isinstance(topic, Topic) else topic
        log = self.transport.log
        if not log.has_topic(name):
            return []
        events: list[Event] = []
        for index in range(log.topic(name).partitions):
            events += _read_partition(log.partition(name, index), name, index, declared)
        return events

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead, running each timer as often as it came due."""
        target_ms = self.clock.time_ms() + int(seconds * 1000)
        while True:
            due = [(when, timer) for timer in self.app.timers
                   if (when := self._timer_due_ms[id(timer)]) <= target_ms]
            if not due:
                break
            when, timer = min(due, key=lambda item: item[0])
            self.clock.advance(max(when - self.clock.time_ms(), 0))
            self._timer_due_ms[id(timer)] = when + _period_ms(timer)
            if timer.on_leader and not self.worker.is_leader():
                continue
            await timer.fn()
            timer.runs += 1
        self.clock.advance(max(target_ms - self.clock.time_ms(), 0))


def _period_ms(timer: Timer) -> int:
    if isinstance(timer, Crontab):
        return max(int(timer.seconds_until_next() * 1000), 1)
    return int(timer.interval_s * 1000)


def _read_partition(partition: Any, name: str, index: int, topic: Topic | None) -> list[Event]:
    events: list[Event] = []
    offset = partition.log_start_offset
    while offset < partition.log_end_offset:
        data = memoryview(partition.read(offset).records)
        next_offset = offset
        while len(data) >= 12:
            size = int.from_bytes(data[8:12], "big") + 12
            batch = DefaultRecordBatch(bytes(data[:size]))
            next_offset = max(next_offset, batch.next_offset)
            if not batch.is_control_batch:
                events += [_decoded(name, index, record, topic)
                           for record in batch if record.offset >= offset]
            data = data[size:]
        if next_offset <= offset:
            break  # nothing readable past here
        offset = next_offset
    return events


def _decoded(name: str, index: int, record: Any, topic: Topic | None) -> Event:
    key, value = record.key, record.value
    if topic is not None:
        with contextlib.suppress(StreamerError):
            key = topic.key_codec.loads(key)
            value = topic.value_codec.loads(value)
    headers = tuple((k, v) for k, v in record.headers)
    return Event(name, index, record.offset, record.timestamp, key, value, headers,
                 record.key, record.value)


def _only_markers(partition: PartitionLog, start: int, end: int) -> bool:
    """True when no agent will ever see a record in ``[start, end)``: it holds only
    transaction markers (control batches; an exactly-once app's topics end with one) and
    batches of aborted transactions."""
    aborted = partition.aborted_ranges(start, end)
    while start < end:
        batches = split_batches(partition.read(start).records)
        if not batches:
            return False
        for _, header in batches:
            if header.next_offset <= start:
                continue
            if not header.is_control and not any(
                r.producer_id == header.producer_id
                and r.first_offset <= header.base_offset <= r.last_offset
                for r in aborted
            ):
                return False
            start = header.next_offset
    return True
