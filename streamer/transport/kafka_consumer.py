"""The Kafka transport's consumer: one member of a consumer group, through aiokafka.

Offsets are committed only when the runtime says so (``enable_auto_commit=False``). aiokafka
runs the group protocol in its own coordinator task and calls the rebalance listener from
there, awaiting it before the group moves on: the runtime's ``on_partitions_revoked`` can
therefore still ``commit`` the partitions it is about to lose, and a runtime blocked in
:meth:`KafkaTransportConsumer.fetch` does not stall the rebalance (``fetch`` returns by its
own timeout). The protocol is Kafka's eager one: a rebalance revokes every partition of a
member, then assigns its new set.

Group timing (the defaults below; Kafka's own are 45 s / 3 s / 5 min):

- ``session_timeout_ms`` 10 s: a member that stops heartbeating (killed, frozen) is dropped
  after this, and its partitions move. A clean :meth:`~KafkaTransportConsumer.close` leaves at
  once instead.
- ``heartbeat_interval_ms`` 1 s: members learn of a rebalance at their next heartbeat, so this
  is how long a join or leave takes to reach the others.
- ``max_poll_interval_ms`` 5 min: a member that does not call ``fetch`` for this long is taken
  out of the group, so one stuck agent cannot hold partitions forever.
- ``rebalance_timeout_ms`` 60 s: how long the broker waits for members to rejoin, which
  includes the runtime's revoke callback (finish, flush, commit).

A ``group_instance_id`` makes the member static (KIP-345): a restart with the same id takes
the place of the member it replaces at once, with its partitions, instead of waiting for
its session to expire and a rebalance (exactly-once workers use their transactional id). A
clean :meth:`~KafkaTransportConsumer.close` still leaves the group at once: aiokafka does not
send LeaveGroup for a static member, so this consumer does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import OffsetAndMetadata

from ..events import Event, TopicPartition
from .assignor import CopartitionedAssignor
from .base import PartitionReader, RebalanceListener, TransportConsumer
from .kafka_client import REQUEST_TIMEOUT_MS, ConsumerError, explain, start_bounded

__all__ = ["KafkaReader", "KafkaTransportConsumer"]

SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 1_000
MAX_POLL_INTERVAL_MS = 300_000
REBALANCE_TIMEOUT_MS = 60_000
# Per partition and fetch request: two of our 512 KiB batches. Measured here, 1 MiB decoded
# faster than 2 or 4 MiB (a smaller response buffer), and it is Kafka's default.
PARTITION_FETCH_BYTES_MAX = 1024 * 1024
# How long the broker may hold a fetch open waiting for data.
FETCH_WAIT_MS_MAX = 500
# Leaving the group waits for the coordinator's answer; a dead broker must not hold close().
CONSUMER_STOP_TIMEOUT_MS = 5_000


class KafkaTransportConsumer(TransportConsumer):
    """A consumer-group member over the Kafka protocol; made by ``KafkaTransport.consumer``."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_committed",
        connect_timeout_ms: int,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        max_poll_interval_ms: int = MAX_POLL_INTERVAL_MS,
        standby_replicas: int = 0,
        group_instance_id: str | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', "
                             f"not {auto_offset_reset!r}")
        assert topics, "a consumer needs at least one topic"
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.group_id = group_id
        self.topics = tuple(topics)
        self.auto_offset_reset = auto_offset_reset
        self.isolation_level = isolation_level
        self.connect_timeout_ms = connect_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.group_instance_id = group_instance_id
        self._listener = _RebalanceAdapter(listener, self._generation)
        self._assignor = CopartitionedAssignor(standby_replicas)
        self._consumer: Any = None  # AIOKafkaConsumer once started

    async def start(self) -> None:
        """Connect and subscribe; the group is joined in the background, and ``fetch``
        returns nothing until the first assignment arrives."""
        assert self._consumer is None, "start() called twice"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=self.group_id,
            group_instance_id=self.group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            isolation_level=self.isolation_level,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES_MAX,
            fetch_max_wait_ms=FETCH_WAIT_MS_MAX,
            # Co-partitioned first; round-robin lets plain Kafka clients share the group.
            partition_assignment_strategy=(self._assignor, RoundRobinPartitionAssignor),
        )
        consumer.subscribe(topics=list(self.topics), listener=self._listener)
        # Set before start(): the first assignment's listener may run inside it, and it
        # pauses the new partitions through this consumer while tables restore.
        self._consumer = consumer
        try:
            await start_bounded(
                consumer.start(), consumer.stop,
                bootstrap=self.bootstrap, what=f"consumer of group {self.group_id!r}",
                timeout_ms=self.connect_timeout_ms,
            )
        except BaseException:
            self._consumer = None
            raise

    async def close(self) -> None:
        """Leave the group (the others rebalance at once) and disconnect. Bounded: with the
        broker gone, the group drops this member after ``session_timeout_ms`` anyway."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            if self.group_instance_id is not None:
                with contextlib.suppress(TimeoutError, KafkaError):
                    await asyncio.wait_for(_leave_static(consumer),
                                           CONSUMER_STOP_TIMEOUT_MS / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.stop(), CONSUMER_STOP_TIMEOUT_MS / 1000)

    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        assert self._consumer is not None, "fetch() on a consumer that is not started"
        self._listener.raise_failure()
        try:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise ConsumerError(
                f"fetch for group {self.group_id!r} from {self.bootstrap} failed: {explain(exc)}"
            ) from exc
        batches: list[tuple[TopicPartition, list[Event]]] = []
        for (topic, partition), records in fetched.items():
            # Per record: one Event, fields passed positionally (headers are already a tuple).
            events = [
                Event(topic, partition, r.offset, r.timestamp, r.key, r.value, r.headers)
                for r in records
            ]
            batches.append((TopicPartition(topic, partition), events))
        return batches

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        request = {
            KafkaTopicPartition(topic, partition): OffsetAndMetadata(offset, "")
            for (topic, partition), offset in offsets.items()
        }
        try:
            await self._consumer.commit(request)
        except KafkaError as exc:
            raise ConsumerError(
                f"commit of {dict(offsets)} for group {self.group_id!r} failed: {explain(exc)}"
            ) from exc

    def _generation(self) -> int:
        """The group generation aiokafka is in (-1 after the group dropped this member)."""
        if self._consumer is None:
            return -1
        generation: int = self._consumer._coordinator.generation  # noqa: SLF001
        return generation

    def in_generation(self) -> bool:
        """Whether this member is still in the generation of its last assignment: false
        once the group dropped it (a heartbeat found it unknown or of an old generation),
        when its committed offsets could belong to another member."""
        generation = self._generation()
        return generation >= 0 and generation == self._listener.assigned_generation

    def assignment(self) -> frozenset[TopicPartition]:
        if self._consumer is None:
            return frozenset()
        return frozenset(TopicPartition(tp.topic, tp.partition)
                         for tp in self._consumer.assignment())

    def standby_partitions(self) -> frozenset[int]:
        return self._assignor.standby

    def pause(self, partitions: frozenset[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            assigned = consumer.assignment()
            consumer.pause(*(tp for tp in (KafkaTopicPartition(*p) for p in partitions)
                             if tp in assigned))

    def resume(self, partitions: frozenset[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is not None:
            assigned = consumer.assignment()
            consumer.resume(*(tp for tp in (KafkaTopicPartition(*p) for p in partitions)
                              if tp in assigned))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTopicPartition(partition.topic, partition.partition), offset)


async def _leave_static(consumer: Any) -> None:
    """LeaveGroup for a static member (which aiokafka's stop does not send)."""
    coordinator = consumer._coordinator  # noqa: SLF001
    if coordinator.generation > 0 and coordinator.member_id:
        await coordinator._send_req(  # noqa: SLF001
            LeaveGroupRequest(coordinator.group_id, coordinator.member_id))


class _RebalanceAdapter(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Awaits our listener's callbacks from aiokafka's coordinator task.

    aiokafka logs and swallows a callback's exception; this keeps the first one so the next
    ``fetch`` raises it (wrapped in :class:`ConsumerError`) instead of it going unnoticed. An
    empty revocation (a member's first join) is not passed on.
    """

    def __init__(self, listener: RebalanceListener, generation: Callable[[], int]) -> None:
        self.listener = listener
        self.failure: BaseException | None = None
        self._generation = generation
        self.assigned_generation = -1  # the generation of the last assignment

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        if revoked:
            await self._call(self.listener.on_partitions_revoked, revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        self.assigned_generation = self._generation()
        await self._call(self.listener.on_partitions_assigned, assigned)

    async def _call(
        self,
        callback: Callable[[frozenset[TopicPartition]], Awaitable[None]],
        partitions: set[Any],
    ) -> None:
        ours = frozenset(TopicPartition(tp.topic, tp.partition) for tp in partitions)
        try:
            await callback(ours)
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            raise

    def raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            raise ConsumerError(f"rebalance callback failed: {failure!r}") from failure


class KafkaReader(PartitionReader):
    """Partitions assigned by hand through an aiokafka consumer without a group."""

    def __init__(self, bootstrap: str, *, client_id: str, isolation_level: str,
                 connect_timeout_ms: int) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.isolation_level = isolation_level
        self.connect_timeout_ms = connect_timeout_ms
        self._consumer: Any = None
        self._positions: dict[TopicPartition, int] = {}

    async def _started(self) -> Any:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, client_id=self.client_id, group_id=None,
                enable_auto_commit=False, isolation_level=self.isolation_level,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                max_partition_fetch_bytes=PARTITION_FETCH_BYTES_MAX,
                fetch_max_wait_ms=FETCH_WAIT_MS_MAX,
            )
            await start_bounded(
                consumer.start(), consumer.stop, bootstrap=self.bootstrap,
                what="changelog reader", timeout_ms=self.connect_timeout_ms,
            )
            self._consumer = consumer
        return self._consumer

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        consumer = await self._started()
        try:
            ends = await consumer.end_offsets([KafkaTopicPartition(*tp) for tp in partitions])
        except KafkaError as exc:
            raise ConsumerError(f"end offsets of {list(partitions)} from {self.bootstrap} "
                                f"failed: {explain(exc)}") from exc
        return {TopicPartition(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        self._positions.update(positions)
        self._reassign(positions)

    def unassign(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)
        self._reassign({})

    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    async def position(self, partition: TopicPartition) -> int:
        if self._consumer is None:
            return self._positions[partition]
        offset: int = await self._consumer.position(KafkaTopicPartition(*partition))
        self._positions[partition] = offset
        return offset

    def _reassign(self, seeks: Mapping[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return  # fetch starts it and assigns everything
        consumer.assign([KafkaTopicPartition(*tp) for tp in self._positions])
        for tp in self._positions:
            consumer.seek(KafkaTopicPartition(*tp), self._positions[tp])

    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        if not self._positions:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        if self._consumer is None:
            await self._started()
            self._reassign(self._positions)
        try:
            fetched = await self._consumer.getmany(timeout_ms=timeout_ms,
                                                   max_records=max_records)
        except KafkaError as exc:
            raise ConsumerError(f"changelog fetch from {self.bootstrap} failed: "
                                f"{explain(exc)}") from exc
        batches: list[tuple[TopicPartition, list[Event]]] = []
        for (topic, partition), records in fetched.items():
            tp = TopicPartition(topic, partition)
            if tp not in self._positions or not records:
                continue
            events = [Event(topic, partition, r.offset, r.timestamp, r.key, r.value, r.headers)
                      for r in records]
            self._positions[tp] = events[-1].offset + 1
            batches.append((tp, events))
        return batches

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._positions.clear()
        if consumer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.stop(), CONSUMER_STOP_TIMEOUT_MS / 1000)
