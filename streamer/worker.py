"""The worker: runs an app's agents, timers and tasks over a transport.

One loop fetches batches from the partitions this worker owns, decodes them with their
topic's codecs, and hands each batch to every agent (or stream) reading that topic. Offsets
are committed at checkpoints, every ``commit_interval_s`` or ``commit_every`` events: first
everything the agents sent is flushed (acknowledged by the log), then the offsets below
which every event is processed are committed. A crash therefore replays events, never skips
them (at-least-once). Before partitions move to another worker, the same checkpoint runs
for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from .agents import AgentError
from .app import App
from .changelogs import Tables
from .copartition import check_copartitioning
from .errors import StreamerError
from .events import Event, Headers, TopicPartition
from .inbox import BatchAck, Inbox, OffsetTracker
from .log.clock import Clock
from .partitioner import KeyPartitioner
from .serialization import SerializationError
from .statistics import WorkerSnapshot
from .statistics_log import StatisticsPublisher
from .statistics_worker import WorkerActivity, snapshot
from .streams import DecodeFailure
from .timers import run_timer
from .topics import Topic
from .transport import (
    LogInUseError,
    TopicSpec,
    Transport,
    TransportConsumer,
    open_transport,
)

__all__ = ["Worker", "run_worker"]

logger = logging.getLogger("streamer.worker")

FETCH_TIMEOUT_MS = 100
FETCH_RECORDS_MAX = 10_000
PRIMING_ROUNDS = 20  # event-loop turns for agents to reach their first `async for`
DRAIN_TIMEOUT_S = 10.0  # at shutdown, time for agents to finish what they were given
# How long a checkpoint waits for agents to finish the event they are on (see
# Worker._take_between_events); an agent awaiting something slow mid-event is not waited for.
BOUNDARY_WAIT_S = 0.5


Route = Callable[[int], Inbox]


class Worker:
    def __init__(
        self,
        app: App,
        *,
        broker: str | None = None,
        listen: str | None | Literal["app"] = "app",
        clock: Clock | None = None,
        run_timers: bool = True,
    ) -> None:
        self.app = app
        self.broker_url = broker or app.broker
        self.listen = app.listen if listen == "app" else listen
        self.clock = clock  # None: the system clock stamps records sent without a timestamp
        self.run_timers = run_timers
        self.transport: Transport | None = None
        self.consumer: TransportConsumer | None = None
        self.consuming = False
        self.state = "starting"
        self.started_at = time.monotonic()
        self.events_in = 0
        self.commits = 0
        self._partitioner = KeyPartitioner()
        self._tracker = OffsetTracker()
        self._routes: dict[str, list[Route]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.leader_topic = f"{app.id}-__leader"
        # Statistics: what the hooks below record for snapshots, and the task publishing them.
        self.activity = WorkerActivity(app.id)
        self._publisher: StatisticsPublisher | None = None
        self.tables = Tables(self, _state_root(app, self.broker_url))
        self._checkpointing = asyncio.Lock()  # the consume loop's and a revocation's
        # Assigned partitions whose tables are restored: only their events are delivered.
        self._ready: set[TopicPartition] = set()
        self._generation = 0  # counts revocations and assignments

    # -- sending --------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int | None,
        partition: int | None,
    ) -> None:
        transport = self.transport
        assert transport is not None, "the worker is not running"
        try:
            count = transport.partition_count(topic)
        except KeyError:
            count = (await transport.ensure_topics([TopicSpec(topic)]))[topic]
        if partition is None:
            partition = self._partitioner.partition(key, count)
        elif not 0 <= partition < count:
            raise StreamerError(f"topic {topic!r} has {count} partitions, not {partition + 1}")
        if timestamp_ms is None:
            timestamp_ms = self.time_ms()
        await transport.send(topic, partition, key, value, headers, timestamp_ms)

    def time_ms(self) -> int:
        """Now, by the worker's clock (a test's manual clock, else the system's)."""
        clock = self.clock
        return time.time_ns() // 1_000_000 if clock is None else int(clock.time_ms())

    # -- running --------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; raises :class:`AgentError` if an agent failed."""
        stop = stop or asyncio.Event()
        app = self.app
        app.worker = self
        self.transport = transport = await self._start_transport()
        try:
            await self._start_agents()
            await self._ensure_topics()
            await self.tables.start()
            check_copartitioning(app, transport.partition_count)
            self.consumer = consumer = transport.consumer(
                app.id, [*self._routes, self.leader_topic], _Listener(self),
                standby_replicas=self.tables.standby_replicas,
            )
            await consumer.start()
            self.consuming = True
            self.state = "running"
            self._start_timers_and_tasks()
            self._publisher = StatisticsPublisher(self)
            self._publisher.start()
            logger.info("worker of %s running on %s: %d agents, topics %s", app.id,
                        self.broker_url, len(app.agents), ", ".join(sorted(self._routes)))
            address = getattr(transport, "address", None)
            if address:
                logger.info("the log is served at %s:%d (streamer consume --broker %s:%d ...)",
                            *address, *address)
            await self._consume(consumer, stop)
        finally:
            await self._shutdown()
        if self._failure is not None:
            raise self._failure

    async def _start_transport(self) -> Transport:
        """The embedded log, or, when another process (a worker or ``streamer broker``)
        already owns the folder, that process over the Kafka protocol."""
        transport = open_transport(self.broker_url, app_id=self.app.id, listen=self.listen)
        try:
            await transport.start()
        except LogInUseError as error:
            if error.url is None:
                raise
            logger.info("%s is in use by process %s; joining it at %s",
                        self.broker_url, error.pid, error.url)
            transport = open_transport(error.url, app_id=self.app.id)
            await transport.start()
        return transport

    async def _start_agents(self) -> None:
        app = self.app
        for agent in app.agents:
            self._routes.setdefault(agent.topic.name, []).append(agent.inbox_for)
            for index in range(agent.concurrency):
                self._spawn(agent.run_instance(index), f"agent {agent.name}[{index}]")
        for _ in range(PRIMING_ROUNDS):  # let agents build their streams (group_by, merge)
            await asyncio.sleep(0)
        for topic, route in app.extra_routes:
            self._routes.setdefault(topic.name, []).append(route)

    async def _ensure_topics(self) -> None:
        assert self.transport is not None
        specs = [TopicSpec(t.name, t.partitions, t.config) for t in self.app.topics.values()]
        specs.append(TopicSpec(self.leader_topic, 1, {"cleanup.policy": "compact"}))
        await self.transport.ensure_topics(specs)

    def _start_timers_and_tasks(self) -> None:
        for timer in self.app.timers if self.run_timers else ():
            self._spawn(run_timer(timer, self.is_leader, self._timer_failed), f"timer {timer.name}")
        for task in self.app.tasks:
            self._spawn(task(), f"task {task.__name__}")

    def _timer_failed(self, name: str, error: BaseException) -> None:
        self.app.record_error(name, error, None)

    def is_leader(self) -> bool:
        consumer = self.consumer
        return consumer is not None and (
            TopicPartition(self.leader_topic, 0) in consumer.assignment()
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if not isinstance(error, AgentError):
            error = StreamerError(f"{task.get_name()} failed: {type(error).__name__}: {error}")
            error.__cause__ = task.exception()
        if self._failure is None:
            self._failure = error
            logger.error("%s; stopping the worker", error)
        self._failed.set()

    async def _consume(self, consumer: TransportConsumer, stop: asyncio.Event) -> None:
        last_commit = time.monotonic()
        since_commit = 0
        interval_s, every = self.app.commit_interval_s, self.app.commit_every
        while not stop.is_set() and not self._failed.is_set():
            batches = await consumer.fetch(FETCH_TIMEOUT_MS, FETCH_RECORDS_MAX)
            generation = self._generation  # the assignment these batches were fetched for
            for partition, events in batches:
                if self._generation != generation:
                    # A rebalance came while delivering: the rest was fetched for the old
                    # assignment, and the new one reads from the committed offsets.
                    break
                since_commit += await self._deliver(partition, events)
            if since_commit >= every or time.monotonic() - last_commit >= interval_s:
                await self.checkpoint()
                last_commit, since_commit = time.monotonic(), 0

    async def _deliver(self, partition: TopicPartition, events: list[Event]) -> int:
        routes = self._routes.get(partition.topic)
        if not routes or not events:
            return 0
        if partition not in self._ready:
            # Revoked, or assigned and still restoring its tables (the consumer is paused on
            # it meanwhile, so this batch came just before the pause): read it again.
            consumer = self.consumer
            if consumer is not None and partition in consumer.assignment():
                consumer.seek(partition, events[0].offset)
            return 0
        topic = self.app.topics.get(partition.topic)
        if topic is not None:
            _decode(topic, events)
        ack = BatchAck(partition, events[-1].offset + 1, len(routes))
        self._tracker.track(ack)
        if len(routes) == 1:
            inbox = routes[0](partition.partition)
            ack.inbox = inbox
            await inbox.put(events, ack)
        else:
            for route in routes:
                await route(partition.partition).put(events, ack)
        self.events_in += len(events)
        return len(events)

    async def checkpoint(self, partitions: frozenset[TopicPartition] | None = None) -> None:
        """Write the tables' changes to their changelogs, flush what was sent, record the
        changes in the stores, then commit what was processed (of ``partitions``, or all)."""
        async with self._checkpointing:
            offsets, changes = await self._take_between_events()
            if partitions is not None:
                offsets = {tp: offset for tp, offset in offsets.items() if tp in partitions}
            assert self.transport is not None and self.consumer is not None
            await self.tables.send(changes)
            await self.transport.flush()
            await self.tables.write(changes)
            if offsets:
                await self.consumer.commit(offsets)
                self.commits += 1
                self.activity.committed_offsets(offsets)

    async def _take_between_events(
        self,
    ) -> tuple[dict[TopicPartition, int], list[Any]]:
        """The committable offsets and the tables' changes, taken in one instant while every
        stream is between two events, so a change is never written without its event's
        offset. Streams are held only for that instant; an agent awaiting something slow
        mid-event is waited for at most BOUNDARY_WAIT_S (then its event may be redone after
        a crash: at-least-once)."""
        inboxes = self._inboxes() if self.tables.tables else []
        boundary = asyncio.Event()
        for inbox in inboxes:
            inbox.boundary = boundary
        try:
            deadline = time.monotonic() + BOUNDARY_WAIT_S
            while not all(inbox.between_events for inbox in inboxes):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.001)
            # No await from here: both are taken at the same instant.
            return self._tracker.committable(), self.tables.take_changes()
        finally:
            for inbox in inboxes:
                inbox.boundary = None
            boundary.set()

    def _inboxes(self) -> list[Inbox]:
        inboxes = [inbox for agent in self.app.agents for inbox in agent.inboxes]
        return inboxes + [inbox for _, inbox in self.app.extra_subscriptions]

    async def assign(self, partitions: frozenset[TopicPartition]) -> None:
        """Restore the tables' partitions before any event of ``partitions`` is fetched."""
        assert self.consumer is not None or not self.tables.tables
        numbers = frozenset(tp.partition for tp in partitions if tp.topic != self.leader_topic)
        consumer = self.consumer
        standby = consumer.standby_partitions() if consumer is not None else frozenset()
        if consumer is not None:
            consumer.pause(partitions)  # nothing of them is fetched while tables restore
        try:
            await self.tables.assign(numbers, standby)
        finally:
            if consumer is not None:
                consumer.resume(partitions)
        self._ready |= partitions
        self._generation += 1

    async def revoke(self, partitions: frozenset[TopicPartition]) -> None:
        if not self.consuming:
            return
        self.state = "rebalancing"
        self._ready -= partitions
        self._generation += 1
        for routes in self._routes.values():
            for route in routes:
                for partition in partitions:
                    route(partition.partition).drop(partitions)
        with contextlib.suppress(StreamerError):
            await self.checkpoint(partitions)
        self._tracker.forget(partitions)
        self.activity.revoked(partitions)
        self.tables.revoke(frozenset(tp.partition for tp in partitions
                                     if tp.topic != self.leader_topic))

    async def _shutdown(self) -> None:
        self.state = "stopping"
        self.consuming = False
        if self.consumer is not None:
            if self._failure is None:
                await self._drain()
            # After a failure too: batches every reader finished are done, whatever failed
            # later, and committing them spares the restart from redoing them.
            try:
                await self.checkpoint()
            except Exception as error:  # the log went away: nothing more to commit
                logger.error("final checkpoint failed: %s", error)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tables.close()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.close()
        if self._publisher is not None:  # its last snapshot goes out with the final flush
            await self._publisher.stop()
        if self.transport is not None:
            await self.transport.close()
        self.app.worker = None
        self.state = "stopped"
        logger.info("worker of %s stopped (%d commits)", self.app.id, self.commits)

    async def _drain(self) -> None:
        """Give agents a bounded while to finish the batches they were handed."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and not self._failed.is_set():
            if self.inboxes_idle():
                return
            await asyncio.sleep(0.01)

    def inboxes_idle(self) -> bool:
        return all(inbox.idle for inbox in self._inboxes())

    def processed_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset below which every delivered event was processed."""
        return self._tracker.processed()

    def routed_topics(self) -> list[str]:
        return sorted(self._routes)

    def statistics(self) -> WorkerSnapshot:
        """The worker now, as frozen data (see :mod:`streamer.statistics`)."""
        return snapshot(self)


class _Listener:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        await self.worker.revoke(partitions)

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self.worker.activity.assigned(partitions)
        logger.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]"
                                             for p in sorted(partitions)) or "nothing")
        await self.worker.assign(partitions)
        self.worker.state = "running"


def _decode(topic: Topic, events: list[Event]) -> None:
    key_codec, value_codec = topic.key_codec, topic.value_codec
    loads_key = key_codec.loads
    loads_value = value_codec.loads
    for event in events:
        raw_key, raw_value = event.key, event.value
        event.raw_key, event.raw_value = raw_key, raw_value
        try:
            if raw_key is not None:
                event.key = loads_key(raw_key)
            event.value = loads_value(raw_value)
        except SerializationError as error:
            event.value = DecodeFailure(
                SerializationError(f"topic {topic.name!r} offset {event.offset}: {error}")
            )


def _state_root(app: App, broker_url: str) -> str | None:
    """Where the app's table stores live: ``app.state_dir``; else beside an embedded log
    (``<folder>/state/<app>``), ``./streamer-state/<app>`` on a Kafka broker, and nowhere
    (memory stores) on ``memory://``."""
    if app.state_dir is not None:
        return app.state_dir
    if broker_url.startswith("memory://"):
        return None
    if broker_url.startswith("kafka://"):
        return os.path.join("streamer-state", app.id)
    folder = broker_url.removeprefix("file://")
    return os.path.join(folder, "state", app.id)


def run_worker(app: App, *, broker: str | None = None) -> None:
    """Run a worker in this process until SIGTERM or Ctrl-C (committing before it stops)."""

    # A worker allocates an object or two per event and keeps few cycles: collect young
    # objects less often, and leave what was loaded at start out of every collection.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Worker(app, broker=broker).run(stop=stop)

    asyncio.run(main())
