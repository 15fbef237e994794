"""One log node as the Kafka-protocol handlers see it: the log, the group and transaction
coordinators, the node's address, and the waits that tie them to asyncio.

The storage engine is synchronous; this is where it meets the event loop. Appends run on the
loop thread (a write to the page cache, in request order, which idempotent producers rely
on) and the fsync that ``acks=all`` waits for runs in a worker thread, where concurrent
requests share it (group commit). A fetch that finds too little data parks on
:meth:`Broker.wait_for_data` until an append to one of its partitions wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .cluster import ClusterState
from .errors import InvalidTopicError, UnknownTopicOrPartitionError
from .groups import GroupCoordinator
from .partition import PartitionLog
from .storage import Log
from .transactions import TRANSACTION_STATE_TOPIC, TransactionCoordinator

__all__ = ["Broker", "BrokerConfig", "INTERNAL_TOPICS", "OFFSETS_TOPIC"]

logger = logging.getLogger("streamer.broker")

OFFSETS_TOPIC = "__consumer_offsets"
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    node_id: int = 0
    auto_create_topics: bool = True  # Kafka's auto.create.topics.enable
    default_partitions: int = 1  # Kafka's num.partitions
    advertised_host: str | None = None  # None: the address each client connected to
    advertised_port: int | None = None
    group_initial_rebalance_delay_ms: int = 0
    # How often retention and compaction run (Kafka: log.retention.check.interval.ms).
    maintenance_interval_ms: int = 30_000


TopicPartition = tuple[str, int]


class Broker:
    def __init__(self, log: Log, config: BrokerConfig | None = None) -> None:
        self.log = log
        self.config = config or BrokerConfig()
        self.cluster = ClusterState(log.fs, log.root)
        self.groups = GroupCoordinator(
            log,
            offsets_topic=OFFSETS_TOPIC,
            initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms,
        )
        self.transactions = TransactionCoordinator(self)
        self.port = 0  # set by the server once it listens
        self._waiters: dict[TopicPartition, set[asyncio.Future[None]]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self.closing = False

    async def start(self) -> None:
        await self.groups.start()
        await self.transactions.start()  # completing transactions may write group offsets
        self._maintenance = asyncio.get_running_loop().create_task(self._run_maintenance())

    async def _run_maintenance(self) -> None:
        """Retention and compaction, off the event loop, every ``maintenance_interval_ms``."""
        while True:
            await asyncio.sleep(self.config.maintenance_interval_ms / 1000)
            try:
                await asyncio.to_thread(self.log.run_maintenance)
            except Exception:  # the log logs and survives its own errors; this is a bug
                logger.exception("log maintenance failed")

    async def close(self) -> None:
        """Answer every parked fetch, stop the coordinators, flush and close the log."""
        self.closing = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        await self.transactions.close()  # before the groups: a commit writes their offsets
        await self.groups.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.to_thread(self.log.close)

    # -- topics ---------------------------------------------------------------------------

    def partition(self, topic: str, partition: int, *, create: bool) -> PartitionLog:
        """The partition, creating its topic first when ``create`` and auto-creation allow.

        Raises :class:`UnknownTopicOrPartitionError` or :class:`InvalidTopicError`.
        """
        if create and not self.log.has_topic(topic):
            self.auto_create(topic)
        return self.log.partition(topic, partition)

    def auto_create(self, topic: str) -> bool:
        """Create ``topic`` with the default partition count if allowed; True if it exists."""
        if self.log.has_topic(topic):
            return True
        if not self.config.auto_create_topics or topic in INTERNAL_TOPICS:
            return False
        try:
            self.log.create_topic(topic, self.config.default_partitions)
        except InvalidTopicError:
            raise
        except Exception:  # a concurrent create: fine if the topic now exists
            if not self.log.has_topic(topic):
                raise
        logger.info("auto-created topic %s with %d partitions", topic,
                    self.config.default_partitions)
        return True

    def partition_count(self, topic: str) -> int:
        try:
            return self.log.topic(topic).partitions
        except UnknownTopicOrPartitionError:
            return 0

    # -- durability -----------------------------------------------------------------------

    async def wait_durable(self, partition: PartitionLog, up_to: int) -> None:
        """Return once offsets below ``up_to`` are fsynced (acks=all)."""
        if partition.durable_offset >= up_to or not partition.config.flush_every_append:
            return
        await asyncio.to_thread(partition.flush, up_to)

    def flush_soon(self, partition: PartitionLog) -> None:
        """Start an fsync without waiting for it (acks 0 and 1 under ``flush.ms=0``)."""
        if not partition.config.flush_every_append:
            return
        task = asyncio.get_running_loop().create_task(self._flush_quietly(partition))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _flush_quietly(partition: PartitionLog) -> None:
        try:
            await asyncio.to_thread(partition.flush)
        except Exception as error:  # the partition went offline; appends will say so
            logger.error("background flush of %s failed: %s", partition.name, error)

    # -- transactions ---------------------------------------------------------------------

    async def write_marker(
        self,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int = 0,
    ) -> int:
        """Write a COMMIT or ABORT marker as Produce appends a batch: on the loop, then the
        fsync in a worker thread; wakes the fetches parked on the partition (the last
        stable offset may have moved). Returns the marker's offset.

        Raises :class:`~streamer.log.errors.ProducerFencedError` for an old epoch,
        :class:`UnknownTopicOrPartitionError`, or ``LogStorageError`` if the fsync failed.
        """
        log = self.log.partition(topic, partition)
        offset = log.write_marker(
            producer_id, producer_epoch, commit=commit,
            coordinator_epoch=coordinator_epoch, wait_durable=False,
        )  # fmt: skip
        self.notify_append(topic, partition)
        await self.wait_durable(log, offset + 1)
        return offset

    # -- fetch long-polls -----------------------------------------------------------------

    def notify_append(self, topic: str, partition: int) -> None:
        waiters = self._waiters.pop((topic, partition), None)
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_for_data(self, partitions: Iterable[TopicPartition], timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for an append to any of ``partitions``."""
        if timeout_ms <= 0 or self.closing:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(partitions)
        for key in keys:
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_ms / 1000)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]
