"""The worker: runs an app's agents, timers and tasks over a transport.

One loop fetches batches from the partitions this worker owns, decodes them with their
topic's codecs, and hands each batch to every agent (or stream) reading that topic. Offsets
are committed at checkpoints, every ``commit_interval_s`` or ``commit_every`` events: first
everything the agents sent is flushed (acknowledged by the log), then the offsets below
which every event is processed are committed. A crash therefore replays events, never skips
them (at-least-once). Before partitions move to another worker, the same checkpoint runs
for them.

With ``App(processing_guarantee="exactly_once")`` each checkpoint is a transaction instead:
what agents sent since the last one, the tables' changes and the input offsets become
visible together or not at all (:mod:`streamer.exactly_once`), and the worker reads its
input, changelogs and standbys ``read_committed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Literal

from .agents import AgentError
from .app import App
from .changelogs import Tables
from .copartition import check_copartitioning
from .errors import StreamerError
from .events import Event, Headers, TopicPartition
from .exactly_once import ExactlyOnce
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

__all__ = ["GC_THRESHOLDS", "Worker", "run_worker", "tune_gc"]

logger = logging.getLogger("streamer.worker")

FETCH_TIMEOUT_MS = 100
# Exactly once, outputs are invisible until committed: with work done since the last commit
# the worker fetches with this timeout, and commits once a fetch finds nothing (the input
# caught up), at most every CAUGHT_UP_COMMIT_S.
CAUGHT_UP_FETCH_TIMEOUT_MS = 10
CAUGHT_UP_COMMIT_S = 0.1
FETCH_RECORDS_MAX = 10_000
PRIMING_ROUNDS = 20  # event-loop turns for agents to reach their first `async for`
STOP_REPORT_S = 3.0  # a stop that takes longer logs what it waits for, this often
DRAIN_TIMEOUT_S = 10.0  # at shutdown, time for agents to finish what they were given
# How long a checkpoint waits for agents to finish the event they are on (see
# Worker.streams_held); an agent awaiting something slow mid-event is not waited for.
BOUNDARY_WAIT_S = 0.5
BOUNDARY_WARNING_S = 5.0  # exactly once waits for them: it says so every this often


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
        self._stop = asyncio.Event()  # run()'s
        self._stopping = ""  # what the stop waits for now (logged when it takes long)
        self.leader_topic = f"{app.id}-__leader"
        # Statistics: what the hooks below record for snapshots, and the task publishing them.
        self.activity = WorkerActivity(app.id)
        self._publisher: StatisticsPublisher | None = None
        self.tables = Tables(self, _state_root(app, self.broker_url))
        self._checkpointing = asyncio.Lock()  # the consume loop's and a revocation's
        # Assigned partitions whose tables are restored: only their events are delivered.
        self._ready: set[TopicPartition] = set()
        self._generation = 0  # counts revocations, assignments and replays
        exactly_once = app.processing_guarantee == "exactly_once"
        self.exactly_once = ExactlyOnce(self) if exactly_once else None
        # What consumers and readers see of transactional data: committed only, when this
        # worker's own output is (the transport's default otherwise).
        self.isolation_level = "read_committed" if exactly_once else None

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
        """Send a record (exactly once: in the open transaction)."""
        transport = self.transport
        assert transport is not None, "the worker is not running"
        count = _known_partitions(transport, topic) or await self._create_topic(topic)
        if partition is None:
            partition = self._partitioner.partition(key, count)
        elif not 0 <= partition < count:
            raise _no_such_partition(topic, count, partition)
        if timestamp_ms is None:
            timestamp_ms = self.time_ms()
        await transport.send(topic, partition, key, value, headers, timestamp_ms)

    async def _create_topic(self, topic: str) -> int:
        """Create a topic a record is sent to (with the log's defaults): its partitions."""
        assert self.transport is not None
        count: int = (await self.transport.ensure_topics([TopicSpec(topic)]))[topic]
        return count

    async def send_all(self, topic: str, partition: int,
                       records: list[tuple[bytes, bytes | None]]) -> None:
        """Send records to one partition, stamped now: a checkpoint's changelog records (one
        lookup and one timestamp for them all)."""
        if not records:
            return
        transport = self.transport
        assert transport is not None, "the worker is not running"
        count = _known_partitions(transport, topic) or await self._create_topic(topic)
        if not 0 <= partition < count:
            raise _no_such_partition(topic, count, partition)
        timestamp_ms = self.time_ms()
        send = transport.send
        for key, value in records:
            await send(topic, partition, key, value, (), timestamp_ms)

    def time_ms(self) -> int:
        """Now, by the worker's clock (a test's manual clock, else the system's)."""
        clock = self.clock
        return time.time_ns() // 1_000_000 if clock is None else int(clock.time_ms())

    # -- running --------------------------------------------------------------------------

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; raises :class:`AgentError` if an agent failed."""
        stop = self._stop = stop or asyncio.Event()
        app = self.app
        app.worker = self
        self.transport = transport = await self._start_transport()
        try:
            await self._start_agents()
            await self._ensure_topics()
            if self.exactly_once is not None:  # first: a predecessor's transaction aborts
                await self.exactly_once.start(self.tables.state_path())
            await self.tables.start()
            check_copartitioning(app, transport.partition_count)
            self.consumer = consumer = transport.consumer(
                app.id, [*self._routes, self.leader_topic], _Listener(self),
                standby_replicas=self.tables.standby_replicas, **self._membership(),
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

    def _membership(self) -> dict[str, str]:
        """Exactly once: read committed data only, and be a static member under the
        transactional id, so a restarted worker takes its predecessor's place at once."""
        if self.exactly_once is None:
            return {}
        return {"isolation_level": "read_committed",
                "group_instance_id": self.exactly_once.transactional_id}

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
        self.fail(error)

    def fail(self, error: BaseException) -> None:
        """Stop the worker with ``error`` (the first failure is the one raised)."""
        if self._failure is None:
            self._failure = error
            logger.error("%s; stopping the worker", error)
        self._failed.set()

    def failed(self) -> bool:
        return self._failed.is_set()

    async def _consume(self, consumer: TransportConsumer, stop: asyncio.Event) -> None:
        last_commit = time.monotonic()
        since_commit = 0
        interval_s, every = self.app.commit_interval_s, self.app.commit_every
        exactly_once = self.exactly_once is not None
        unfinished = False  # exactly once: agents were still busy at the last commit
        while not stop.is_set() and not self._failed.is_set():
            waiting_to_commit = exactly_once and (since_commit > 0 or unfinished)
            batches = await consumer.fetch(
                CAUGHT_UP_FETCH_TIMEOUT_MS if waiting_to_commit else FETCH_TIMEOUT_MS,
                FETCH_RECORDS_MAX)
            generation = self._generation  # the assignment these batches were fetched for
            if self.exactly_once is not None:  # where a replay would start
                for partition, events in batches:
                    if events and partition in self._ready:
                        self.exactly_once.fetched(partition, events[0].offset)
            for partition, events in batches:
                if self._generation != generation:
                    # A rebalance came while delivering: the rest was fetched for the old
                    # assignment, and the new one reads from the committed offsets.
                    break
                since_commit += await self._deliver(partition, events)
            # Exactly once, outputs are invisible until their commit: commit as soon as
            # the input runs dry, and again until the agents have finished what they hold.
            since_s = time.monotonic() - last_commit
            caught_up = waiting_to_commit and not batches and since_s >= CAUGHT_UP_COMMIT_S
            if caught_up or since_commit >= every or since_s >= interval_s:
                await self.checkpoint()
                last_commit, since_commit = time.monotonic(), 0
                unfinished = exactly_once and not self.inboxes_idle()

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
        changes in the stores, then commit what was processed (of ``partitions``, or all).
        Exactly once: one transaction commits all of it, whatever ``partitions`` says."""
        async with self._checkpointing:
            if self.exactly_once is not None:
                await self.exactly_once.checkpoint()
                return
            async with self.streams_held(BOUNDARY_WAIT_S, only_with_tables=True):
                offsets, changes = self.take_checkpoint()
            if partitions is not None:
                offsets = {tp: offset for tp, offset in offsets.items() if tp in partitions}
            assert self.transport is not None and self.consumer is not None
            if changes:
                # What the agents sent goes to the log before the state that says they sent
                # it: a crash between the two must not leave a changelog (a join's closed
                # window, say) ahead of the rows it stands for.
                await self.transport.flush()
                await self.tables.send(changes)
            await self.transport.flush()
            await self.tables.write(changes)
            if offsets:
                await self.consumer.commit(offsets)
                self.committed(offsets)

    @contextlib.asynccontextmanager
    async def streams_held(
        self, wait_s: float | None, *, only_with_tables: bool = False
    ) -> AsyncIterator[bool]:
        """Hold every stream between two events for the block, so that what the block
        takes (offsets, table changes) never has half an event in it; gives whether every
        stream got there. ``wait_s``: how long to wait for an agent that is mid-event (its
        event may then be redone after a crash: at-least-once); None: for as long as it
        takes, unless the worker fails or is asked to stop."""
        inboxes = self._inboxes() if self.tables.tables or not only_with_tables else []
        boundary = asyncio.Event()
        for inbox in inboxes:
            inbox.boundary = boundary
        try:
            started = time.monotonic()
            warned = started
            settled = all(inbox.between_events for inbox in inboxes)
            while not settled:
                now = time.monotonic()
                if wait_s is not None and now - started > wait_s or self._failed.is_set():
                    break
                if wait_s is None and self._stop.is_set():
                    break
                if wait_s is None and now - warned > BOUNDARY_WARNING_S:
                    warned = now
                    logger.warning("the checkpoint waits for agents to finish their event "
                                   "(%.0f s so far)", now - started)
                await asyncio.sleep(0.001)
                settled = all(inbox.between_events for inbox in inboxes)
            yield settled
        finally:
            for inbox in inboxes:
                inbox.boundary = None
            boundary.set()

    def take_checkpoint(self) -> tuple[dict[TopicPartition, int], list[Any]]:
        """The committable offsets and the tables' changes, in one instant (no await)."""
        return self._tracker.committable(), self.tables.take_changes()

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        if offsets:
            self.commits += 1
            self.activity.committed_offsets(offsets)

    def replay(self, positions: Mapping[TopicPartition, int]) -> None:
        """Forget everything delivered since the last commit (an aborted transaction) and
        fetch it again from ``positions``: the queued batches are dropped, the tables'
        caches go back to their stores, batches fetched before now are never delivered."""
        partitions = frozenset(self._ready)
        self._generation += 1
        self._drop_held(partitions)
        self._tracker.forget(partitions)
        self.tables.drop_uncommitted()
        consumer = self.consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        for partition, offset in positions.items():
            if partition in assigned:
                consumer.seek(partition, offset)

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
        exactly_once = self.exactly_once
        if exactly_once is None:
            self._drop(partitions)
            with contextlib.suppress(StreamerError):
                await self.checkpoint(partitions)
        else:
            # Their queued events are dropped only once the transaction holds what was done
            # before, with the streams still held: nothing of theirs is processed after it.
            async with self._checkpointing:
                await exactly_once.checkpoint(lambda: self._drop_held(partitions))
            exactly_once.forget(partitions)
        self._tracker.forget(partitions)
        self.activity.revoked(partitions)
        self.tables.revoke(frozenset(tp.partition for tp in partitions
                                     if tp.topic != self.leader_topic))

    def _drop(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget the batches of ``partitions`` queued in the inboxes (rebalance)."""
        for routes in self._routes.values():
            for route in routes:
                for partition in partitions:
                    route(partition.partition).drop(partitions)

    def _drop_held(self, partitions: frozenset[TopicPartition]) -> None:
        """:meth:`_drop`, while the streams are held: a stream that was between two events
        stays so (the rest of its batch counts as finished: it is not for it any more), so
        a later checkpoint never waits on a stream that waits for its next batch."""
        for inbox in self._inboxes():
            settled = inbox.between_events
            inbox.drop(partitions)
            if settled:
                inbox.done = max(inbox.done, inbox.index)

    async def _shutdown(self) -> None:
        self.state = "stopping"
        self.consuming = False
        reporter = asyncio.ensure_future(self._report_stopping(time.monotonic()))
        try:
            if self.consumer is not None:
                if self._failure is None:
                    self._stopping = "agents finishing the events they were handed"
                    await self._drain()
                try:
                    self._stopping = "the final checkpoint (flush, then commit)"
                    await self._final_checkpoint()
                except Exception as error:  # the log went away: nothing more to commit
                    logger.error("final checkpoint failed: %s", error)
            self._stopping = "agents, timers and tasks to stop"
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._stopping = "tables to close"
            await self.tables.close()
            if self.consumer is not None:
                self._stopping = "leaving the consumer group"
                with contextlib.suppress(Exception):
                    await self.consumer.close()
            if self._publisher is not None:  # its last snapshot goes out with the final flush
                self._stopping = "the statistics publisher"
                await self._publisher.stop()
            if self.transport is not None:
                self._stopping = "the transport to close (a last flush)"
                await self.transport.close()
        finally:
            reporter.cancel()
        self.app.worker = None
        self.state = "stopped"
        logger.info("worker of %s stopped (%d commits)", self.app.id, self.commits)

    async def _report_stopping(self, started: float) -> None:
        """A stop that takes long says what it waits for, every ``STOP_REPORT_S``."""
        while True:
            await asyncio.sleep(STOP_REPORT_S)
            logger.warning("still stopping after %.0f s: waiting for %s",
                           time.monotonic() - started, self._stopping)

    async def _final_checkpoint(self) -> None:
        exactly_once = self.exactly_once
        if exactly_once is None:
            # After a failure too: batches every reader finished are done, whatever failed
            # later, and committing them spares the restart from redoing them.
            await self.checkpoint()
            return
        async with self._checkpointing:
            if self._failure is None:  # a commit, unless an agent is stuck mid-event
                await exactly_once.checkpoint(wait_s=BOUNDARY_WAIT_S)
            else:  # the failed event's partial output is in the transaction: none commits
                await exactly_once.abort(f"the worker stops: {self._failure}")

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


def _known_partitions(transport: Transport, topic: str) -> int | None:
    """The topic's partition count, or None when the log does not have it yet."""
    try:
        return transport.partition_count(topic)
    except KeyError:
        return None


def _no_such_partition(topic: str, count: int, partition: int) -> StreamerError:
    return StreamerError(f"topic {topic!r} has {count} partitions, not {partition + 1}")


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


GC_THRESHOLDS = (50_000, 20, 100)  # gc.set_threshold in a worker's process


def tune_gc() -> None:
    """The garbage collector's settings for a process that runs a worker (``streamer
    worker``, ``app.main()``, the benchmarks' children), called once its app is loaded.

    A worker allocates a few objects per event, almost all freed by reference counting, and
    keeps many long-lived ones (table caches, join buffers, window state) that hold few
    cycles. With the defaults, young collections run every 700 allocations and full ones
    whenever the live heap grew by a quarter, each walking every buffered object: a third
    of a stream-stream join's CPU time. So: collect young objects less often, full
    collections ten times less often, and leave what was loaded at start (modules, the app)
    out of every collection."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(app: App, *, broker: str | None = None) -> None:
    """Run a worker in this process until SIGTERM or Ctrl-C (committing before it stops)."""
    tune_gc()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await Worker(app, broker=broker).run(stop=stop)

    asyncio.run(main())
