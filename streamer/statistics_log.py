"""The statistics topic: workers publish their snapshots there, anyone reads them back.

``__streamer_workers`` is a topic of the log an app uses: one partition, compacted (and
deleted after a day, so workers long gone drop out), keyed by worker id, each value one
:class:`~streamer.statistics.WorkerSnapshot` as JSON. A worker publishes a snapshot every
second, and a last one with state ``stopped`` when it shuts down cleanly; a reader takes a
worker whose last snapshot is older than :data:`STALE_AFTER_S` for gone. The worker's own
consumer never subscribes to the topic.

- :class:`StatisticsPublisher`: the worker's task: sample rates, refresh offsets, publish.
  It runs off the processing path (a task waking once a second) and never fails the
  worker: a snapshot that cannot be sent is logged once and skipped.
- :class:`SnapshotReader`: the latest snapshot of each worker, through a plain aiokafka
  consumer (no group) reading the topic's tail.
- :class:`EmbeddedProbe`, :class:`KafkaProbe`: end offsets and the group's commits, from the
  log in the process, or over the Kafka protocol once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .events import TopicPartition
from .statistics import (
    LOG_PARTITIONS_MAX,
    LogPartitionSnapshot,
    LogSnapshot,
    SnapshotFormatError,
    WorkerSnapshot,
    from_json,
    to_json,
)
from .statistics_worker import LogProbe, routed_assignment, snapshot
from .transport import TopicSpec

if TYPE_CHECKING:
    from .worker import Worker

__all__ = [
    "STALE_AFTER_S",
    "STATISTICS_TOPIC",
    "EmbeddedProbe",
    "KafkaProbe",
    "SnapshotReader",
    "StatisticsPublisher",
    "is_live",
    "local_probe",
]

logger = logging.getLogger("streamer.statistics")

STATISTICS_TOPIC = "__streamer_workers"
TOPIC_CONFIG = {
    "cleanup.policy": "compact,delete",
    "retention.ms": str(24 * 3600 * 1000),  # a worker silent for a day is forgotten
    "segment.ms": str(10 * 60 * 1000),  # closed segments are what compaction can clean
    "segment.bytes": str(8 << 20),
    "flush.ms": str(2**63 - 1),  # Kafka's "leave it to the OS": snapshots are not precious
}
PUBLISH_INTERVAL_S = 1.0
STALE_AFTER_S = 5.0  # five missed snapshots: the worker is gone (killed, frozen, cut off)
PROBE_TIMEOUT_S = 2.0  # a Kafka probe's requests; a slow broker skips a refresh
READ_LOOKBACK_S = 600  # a reader starts at the records of the last ten minutes ...
TAIL_RECORDS_MAX = 5_000  # ... and at most this many records before the end
READ_ROUNDS_MAX = 100  # fetches per read() to catch up; the rest waits for the next read
READ_WAIT_MS = 200
# Workers' states that are not news in the events list (rebalances have their own events).
_ROUTINE_STATES = frozenset({"running", "rebalancing"})


def is_live(snap: WorkerSnapshot, now_ms: int, stale_after_s: float = STALE_AFTER_S) -> bool:
    return snap.state != "stopped" and now_ms - snap.at_ms <= stale_after_s * 1000


# -- probes: offsets the transport does not hand the worker --------------------------------


class EmbeddedProbe:
    """Reads the log in this process: nothing to refresh."""

    def __init__(self, transport: Any, group: str) -> None:
        self.transport = transport  # an EmbeddedTransport
        self.group = group

    def end_offset(self, partition: TopicPartition) -> int | None:
        try:
            return int(self.transport.log.partition(*partition).high_watermark)
        except Exception:  # closed, or the topic went away: unknown, not an error
            return None

    def group_offset(self, partition: TopicPartition) -> int | None:
        try:
            committed = self.transport.broker.groups.offsets.get(self.group, *partition)
        except Exception:
            return None
        return None if committed is None else int(committed.offset)

    def log(self) -> LogSnapshot | None:
        try:
            statistics = self.transport.log.statistics()
        except Exception:
            return None
        ordered = sorted(statistics.partitions, key=lambda p: (p.topic, p.partition))
        return LogSnapshot(
            tuple(
                LogPartitionSnapshot(p.topic, p.partition, p.log_start_offset,
                                     p.high_watermark, p.size_bytes)
                for p in ordered[:LOG_PARTITIONS_MAX]
            ),
            (),
            max(len(ordered) - LOG_PARTITIONS_MAX, 0),
        )

    async def refresh(self, partitions: Sequence[TopicPartition]) -> None:
        pass

    async def close(self) -> None:
        pass


class KafkaProbe:
    """End offsets (ListOffsets) and the group's commits (OffsetFetch) of the worker's
    partitions, over the Kafka protocol with clients of its own, refreshed once a second."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._ends: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: Any = None
        self._admin: Any = None

    def end_offset(self, partition: TopicPartition) -> int | None:
        return self._ends.get(partition)

    def group_offset(self, partition: TopicPartition) -> int | None:
        return self._committed.get(partition)

    def log(self) -> LogSnapshot | None:
        if not self._ends:
            return None
        return LogSnapshot(tuple(
            LogPartitionSnapshot(tp.topic, tp.partition, None, end, None)
            for tp, end in sorted(self._ends.items())
        ), ())

    async def refresh(self, partitions: Sequence[TopicPartition]) -> None:
        if not partitions:
            return
        if self._consumer is None:
            await self._start()
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        ends = await self._consumer.end_offsets(
            [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
        )
        self._ends = {TopicPartition(tp.topic, tp.partition): int(end) for tp, end in ends.items()}
        committed = await self._admin.list_consumer_group_offsets(self.group)
        self._committed = {
            TopicPartition(tp.topic, tp.partition): int(meta.offset)
            for tp, meta in committed.items() if meta.offset >= 0
        }

    async def _start(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        timeout_ms = int(PROBE_TIMEOUT_S * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, client_id=f"{self.group}-statistics",
            enable_auto_commit=False, request_timeout_ms=timeout_ms,
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=f"{self.group}-statistics",
            request_timeout_ms=timeout_ms,
        )
        try:
            await consumer.start()
            await admin.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise
        self._consumer, self._admin = consumer, admin

    async def close(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), PROBE_TIMEOUT_S)
        if admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), PROBE_TIMEOUT_S)


def _embedded(worker: Worker) -> Any:
    from .transport.embedded import EmbeddedTransport

    transport = worker.transport
    return transport if isinstance(transport, EmbeddedTransport) else None


def local_probe(worker: Worker) -> LogProbe | None:
    """A probe that needs no I/O (the log in this process), for a snapshot taken while no
    publisher runs; None on the Kafka transport."""
    transport = _embedded(worker)
    return None if transport is None else EmbeddedProbe(transport, worker.app.id)


def _probe_for(worker: Worker) -> LogProbe | None:
    embedded = local_probe(worker)
    if embedded is not None:
        return embedded
    bootstrap = getattr(worker.transport, "bootstrap", None)  # the Kafka transport's
    return KafkaProbe(bootstrap, worker.app.id) if isinstance(bootstrap, str) else None


# -- publishing ------------------------------------------------------------------------------


class StatisticsPublisher:
    """Samples the worker's rates and takes a snapshot every ``interval_s``, keeps it as
    ``worker.activity.latest`` (what Prometheus is served) and, when the log can be
    reached by others, sends it to :data:`STATISTICS_TOPIC`. An embedded log served to no
    one (``listen=None``, as in :class:`~streamer.testing.AppRunner`) is not written to."""

    def __init__(
        self, worker: Worker, *, interval_s: float | None = None, publish: bool | None = None,
    ) -> None:
        self.worker = worker
        self.interval_s = PUBLISH_INTERVAL_S if interval_s is None else interval_s
        assert self.interval_s > 0, "the publisher wakes at a steady pace"
        embedded = _embedded(worker)
        self.publish = (embedded is None or embedded.address is not None) if publish is None \
            else publish
        self.published = 0
        self._topic_ready = False  # created (or found) with its config: sends may go
        self._task: asyncio.Task[None] | None = None
        self._state = worker.state
        self._send_failed = False

    def start(self) -> None:
        assert self._task is None, "start() once"
        self.worker.activity.probe = _probe_for(self.worker)
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name("statistics publisher")

    async def _run(self) -> None:
        self.worker.activity.sample(self.worker)
        await asyncio.sleep(self.interval_s)
        # Created a tick after start, not during it: the worker's start-up (group join,
        # first fetches) goes exactly as without statistics.
        if self.publish:
            await self._create_topic()
        while True:
            try:
                await self.tick()
            except Exception:  # a bug here must not take the worker down
                logger.exception("taking a statistics snapshot failed")
            await asyncio.sleep(self.interval_s)

    async def _create_topic(self) -> None:
        transport = self.worker.transport
        assert transport is not None
        try:
            await transport.ensure_topics([TopicSpec(STATISTICS_TOPIC, 1, TOPIC_CONFIG)])
        except Exception as error:
            logger.warning("cannot create %s (%s): this worker's statistics are not published",
                           STATISTICS_TOPIC, error)
            self.publish = False
            return
        self._topic_ready = True

    async def tick(self) -> WorkerSnapshot:
        """One round: note a state change, sample rates, refresh offsets, snapshot, send."""
        worker = self.worker
        activity = worker.activity
        if worker.state != self._state:
            if not {worker.state, self._state} <= _ROUTINE_STATES:
                activity.note("state", f"{self._state} → {worker.state}")
            self._state = worker.state
        activity.sample(worker)
        probe = activity.probe
        if probe is not None:
            try:
                await asyncio.wait_for(probe.refresh(routed_assignment(worker)),
                                       PROBE_TIMEOUT_S * 2)
            except (Exception, TimeoutError) as error:
                logger.debug("refreshing offsets failed: %r", error)
        snap = activity.latest = snapshot(worker)
        await self._send(snap)
        return snap

    async def _send(self, snap: WorkerSnapshot) -> None:
        if not (self.publish and self._topic_ready):
            return  # never a send that would create the topic without its config
        try:
            await self.worker.send(STATISTICS_TOPIC, snap.worker.encode(), to_json(snap), (),
                                   snap.at_ms, 0)
        except Exception as error:
            if not self._send_failed:
                logger.warning("cannot publish statistics to %s: %s", STATISTICS_TOPIC, error)
                self._send_failed = True
            return
        self.published += 1

    async def stop(self) -> None:
        """Stop, and send a last snapshot with state ``stopped`` (the transport's closing
        flush delivers it); call before the transport closes."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        worker = self.worker
        with contextlib.suppress(Exception):
            worker.activity.note("state", f"{worker.state} → stopped")
            final = dataclasses.replace(snapshot(worker), state="stopped")
            worker.activity.latest = final
            await self._send(final)
        probe, worker.activity.probe = worker.activity.probe, None
        if probe is not None:
            await probe.close()


# -- reading -----------------------------------------------------------------------------------


class SnapshotReader:
    """The latest snapshot of every worker that published to a log's statistics topic.

    A plain aiokafka consumer (no group, nothing committed) reads the topic's tail: from
    the records of the last :data:`READ_LOOKBACK_S` seconds, at most
    :data:`TAIL_RECORDS_MAX` records back; each :meth:`read` catches up to the end.
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer  # a started AIOKafkaConsumer without a group
        self.snapshots: dict[str, WorkerSnapshot] = {}
        self.undecodable = 0  # records that were not snapshots of this schema
        self._partition: Any = None

    async def read(self) -> dict[str, WorkerSnapshot]:
        """Worker id → its latest snapshot (live, stale and stopped alike)."""
        if self._partition is None and not await self._assign():
            return {}
        consumer, partition = self.consumer, self._partition
        end = (await consumer.end_offsets([partition]))[partition]
        for _ in range(READ_ROUNDS_MAX):
            if await consumer.position(partition) >= end:
                break
            fetched = await consumer.getmany(partition, timeout_ms=READ_WAIT_MS)
            for record in fetched.get(partition, ()):
                self._take(record.key, record.value)
        return dict(self.snapshots)

    async def _assign(self) -> bool:
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        consumer = self.consumer
        # Metadata of all topics: naming the topic would create it on brokers that
        # auto-create topics, and a log without workers should stay as it is.
        if STATISTICS_TOPIC not in await consumer.topics():
            return False
        partition = KafkaTopicPartition(STATISTICS_TOPIC, 0)
        consumer.assign([partition])
        since_ms = time.time_ns() // 1_000_000 - READ_LOOKBACK_S * 1000
        found = await consumer.offsets_for_times({partition: since_ms})
        start = (await consumer.beginning_offsets([partition]))[partition]
        end = (await consumer.end_offsets([partition]))[partition]
        at = found[partition].offset if found.get(partition) is not None else end
        consumer.seek(partition, max(at, end - TAIL_RECORDS_MAX, start))
        self._partition = partition
        return True

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:  # a tombstone: the worker's entry was deleted
            self.snapshots.pop(name, None)
            return
        try:
            self.snapshots[name] = from_json(value)
        except SnapshotFormatError as error:
            self.undecodable += 1
            logger.debug("record of %s in %s: %s", name, STATISTICS_TOPIC, error)
