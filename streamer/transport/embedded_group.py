"""A consumer-group member that talks to the in-process group coordinator.

:class:`GroupMember` is what a Kafka client's group coordinator client is, minus the sockets:
it calls :class:`~streamer.log.groups.GroupCoordinator` directly, and speaks Kafka's consumer
protocol (protocol type ``consumer``, the ``roundrobin`` and ``range`` assignors, metadata
and assignments encoded as Kafka's ``ConsumerProtocol`` structs), so that aiokafka, librdkafka
or Java members connected through the Kafka-protocol server share a group with it.

The rebalance is Kafka's eager one::

    heartbeat says REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID
      → on_revoked(every partition owned)  → JoinGroup (waits for the join phase)
      → the leader assigns (roundrobin or range, over sorted partitions)
      → SyncGroup → on_assigned(the new partitions)

Two tasks run per member: the heartbeat, every ``heartbeat_interval_ms``, which keeps the
session alive even while a revoke callback is running, and the rebalance, which waits for the
heartbeat to ask for one. A leader also asks for one when a subscribed topic's partition
count changes (new partitions, or a topic created after the group formed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from streamer.log.groups import GroupCoordinator, JoinResult
from streamer.log.protocol.error_codes import ErrorCode

from ..events import TopicPartition
from .assignor import (
    ASSIGNOR_NAME,
    assign_copartitioned,
    decode_assignment_user_data,
    decode_subscription_user_data,
    encode_assignment_user_data,
    encode_subscription_user_data,
)
from .kafka_client import ConsumerError

__all__ = [
    "ASSIGNORS",
    "CommitFailedError",
    "ConsumerGroupError",
    "GroupMember",
    "GroupMemberStatistics",
    "assign_range",
    "assign_roundrobin",
]

logger = logging.getLogger("streamer.transport.embedded")

PROTOCOL_TYPE = "consumer"
CLIENT_HOST = "/embedded"  # what DescribeGroups shows for an in-process member
# A JoinGroup/SyncGroup round is retried while the group keeps changing under it; past this
# many rounds in a row something is wrong (members flapping), and the caller hears of it.
JOIN_ROUNDS_MAX = 100
# Kafka's retry.backoff.ms, for COORDINATOR_LOAD_IN_PROGRESS while offsets load.
RETRY_BACKOFF_MS = 100

# (member id → subscribed topics, topic → partition count) → member id → partitions
Assignor = Callable[
    [Mapping[str, Sequence[str]], Callable[[str], int]], dict[str, list[TopicPartition]]
]
PartitionsCallback = Callable[[frozenset[TopicPartition]], Awaitable[None]]


class ConsumerGroupError(ConsumerError):
    """A member could not join or stay in its group; ``error_code`` is Kafka's reason."""

    def __init__(self, message: str, *, group_id: str, error_code: ErrorCode) -> None:
        super().__init__(f"group {group_id!r}: {message} ({error_code.name})")
        self.group_id = group_id
        self.error_code = error_code


class CommitFailedError(ConsumerGroupError):
    """The coordinator refused a commit: most often a rebalance took the partitions away
    first. The records after the last successful commit will be read again (at least once)."""


# -- assignors ------------------------------------------------------------------------------


def _topic_partitions(
    topics: set[str], partition_count: Callable[[str], int]
) -> list[TopicPartition]:
    return sorted(
        TopicPartition(topic, p) for topic in topics for p in range(partition_count(topic))
    )


def assign_roundrobin(
    subscriptions: Mapping[str, Sequence[str]], partition_count: Callable[[str], int]
) -> dict[str, list[TopicPartition]]:
    """Kafka's RoundRobinAssignor: every subscribed partition, sorted by topic and number,
    dealt in turn to the members (sorted by id) that subscribe to its topic."""
    assignment: dict[str, list[TopicPartition]] = {member: [] for member in subscriptions}
    topics = {topic for subscribed in subscriptions.values() for topic in subscribed}
    members = itertools.cycle(sorted(subscriptions))
    for tp in _topic_partitions(topics, partition_count):
        member = next(members)
        while tp.topic not in subscriptions[member]:  # some member subscribes to it
            member = next(members)
        assignment[member].append(tp)
    return assignment


def assign_range(
    subscriptions: Mapping[str, Sequence[str]], partition_count: Callable[[str], int]
) -> dict[str, list[TopicPartition]]:
    """Kafka's RangeAssignor: per topic, consecutive ranges of partitions to its subscribers
    (sorted by id); the first ``partitions % members`` get one more."""
    assignment: dict[str, list[TopicPartition]] = {member: [] for member in subscriptions}
    topics = {topic for subscribed in subscriptions.values() for topic in subscribed}
    for topic in sorted(topics):
        members = sorted(m for m, subscribed in subscriptions.items() if topic in subscribed)
        count = partition_count(topic)
        each, extra = divmod(count, len(members))
        start = 0
        for index, member in enumerate(members):
            length = each + (1 if index < extra else 0)
            assignment[member].extend(
                TopicPartition(topic, p) for p in range(start, start + length)
            )
            start += length
    return assignment


# In the order offered: roundrobin first, as aiokafka's default, so mixed groups agree on it.
ASSIGNORS: dict[str, Assignor] = {"roundrobin": assign_roundrobin, "range": assign_range}


def encode_metadata(topics: Sequence[str], user_data: bytes = b"") -> bytes:
    return bytes(ConsumerProtocolMemberMetadata(0, sorted(topics), user_data).encode())


def decode_subscription(metadata: bytes) -> list[str]:
    """A member's subscribed topics; metadata that does not decode subscribes to nothing."""
    try:
        return list(ConsumerProtocolMemberMetadata.decode(metadata).subscription)
    except Exception:  # another client's bytes: a bad member must not stop the leader
        logger.warning("member metadata does not decode as ConsumerProtocol: %r", metadata[:64])
        return []


def decode_standby_replicas(metadata: bytes) -> int:
    try:
        user_data = ConsumerProtocolMemberMetadata.decode(metadata).user_data
    except Exception:  # decode_subscription has warned about it
        return 0
    return decode_subscription_user_data(user_data)


def encode_assignment(partitions: Sequence[TopicPartition], user_data: bytes = b"") -> bytes:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    topics = sorted((topic, sorted(numbers)) for topic, numbers in by_topic.items())
    return bytes(ConsumerProtocolMemberAssignment(0, topics, user_data).encode())


def decode_standby(data: bytes) -> frozenset[int]:
    """The standby partition numbers the ``streamer`` assignor gave this member."""
    if not data:
        return frozenset()
    return decode_assignment_user_data(ConsumerProtocolMemberAssignment.decode(data).user_data)


def decode_assignment(data: bytes) -> frozenset[TopicPartition]:
    if not data:  # Kafka sends nothing to a member the leader left out
        return frozenset()
    decoded = ConsumerProtocolMemberAssignment.decode(data)
    return frozenset(
        TopicPartition(topic, p) for topic, partitions in decoded.assignment for p in partitions
    )


# -- the member -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupMemberStatistics:
    group_id: str
    member_id: str
    generation_id: int
    leader: bool
    assignment: frozenset[TopicPartition]
    rebalances: int  # completed since start, the first join included


class GroupMember:
    """One member of ``group_id`` subscribed to ``topics``; see the module docstring.

    ``on_revoked`` runs before a rejoin with every partition owned, ``on_assigned`` after
    the sync with the new ones. An exception from either is kept and raised by
    :meth:`raise_failure` (the consumer's next fetch); the rebalance completes anyway.
    """

    def __init__(
        self,
        coordinator: GroupCoordinator,
        group_id: str,
        topics: Sequence[str],
        *,
        client_id: str,
        partition_count: Callable[[str], int],
        on_revoked: PartitionsCallback,
        on_assigned: PartitionsCallback,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        heartbeat_interval_ms: int,
        standby_replicas: int = 0,
    ) -> None:
        assert 0 < heartbeat_interval_ms < session_timeout_ms, "heartbeats within the session"
        self._coordinator = coordinator
        self.group_id = group_id
        self.topics = tuple(topics)
        self._client_id = client_id
        self._partition_count = partition_count
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned
        self._session_timeout_ms = session_timeout_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        metadata = encode_metadata(self.topics)
        # The co-partitioning assignor first: every streamer member prefers it, and a group
        # with a plain Kafka client in it falls back to round-robin.
        ours = encode_metadata(self.topics, encode_subscription_user_data(standby_replicas))
        self._protocols = [(ASSIGNOR_NAME, ours), *((name, metadata) for name in ASSIGNORS)]
        self.member_id = ""
        self.generation_id = -1
        self.leader = False
        self.assignment: frozenset[TopicPartition] = frozenset()
        self.standby: frozenset[int] = frozenset()  # partition numbers to keep warm
        self.rebalancing = False  # from the heartbeat's alarm until on_assigned returned
        self.stable = asyncio.Event()  # set while not rebalancing
        self._joining = False  # inside JoinGroup/SyncGroup: the generation is changing
        self._rejoin = asyncio.Event()
        self._failure: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._rebalances = 0
        # The leader's view of the group's topics when it assigned: it rebalances the group
        # when a count changes (new partitions, a topic created after the join), as Kafka's
        # leaders do on a metadata change.
        self._partition_counts: dict[str, int] = {}
        self._closed = False

    async def start(self) -> None:
        """Join, get an assignment, call ``on_assigned``; heartbeats keep the session alive
        meanwhile (``on_assigned`` may restore state for a long time)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat_loop(), name=f"heartbeat {self.group_id}"),
            loop.create_task(self._rebalance_loop(), name=f"rebalance {self.group_id}"),
        ]
        self._begin_rebalance()
        try:
            await self.stable.wait()
            self.raise_failure()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the tasks and leave the group, so the others rebalance at once."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.stable.set()  # nobody waits for a rebalance that will not come
        if self.member_id:
            self._coordinator.leave_group(self.group_id, [(self.member_id, None)])
        self.assignment = frozenset()

    def raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` under the current generation; durable when this returns."""
        if not offsets:
            return
        results = await self._coordinator.commit_offsets(
            self.group_id,
            self.generation_id,
            self.member_id,
            None,
            [(tp.topic, tp.partition, offset, -1, None) for tp, offset in offsets.items()],
        )
        failed = [r for r in results if r.error_code != ErrorCode.NONE]
        if failed:
            names = ", ".join(f"{r.topic}/{r.partition}" for r in failed)
            raise CommitFailedError(
                f"commit of {names} refused", group_id=self.group_id,
                error_code=ErrorCode(failed[0].error_code),
            )  # fmt: skip

    def statistics(self) -> GroupMemberStatistics:
        return GroupMemberStatistics(
            self.group_id, self.member_id, self.generation_id, self.leader, self.assignment,
            self._rebalances,
        )  # fmt: skip

    # -- joining --------------------------------------------------------------------------

    async def _join_and_sync(self) -> None:
        """JoinGroup then SyncGroup until one round completes; sets the new assignment."""
        self._joining = True
        try:
            for _ in range(JOIN_ROUNDS_MAX):
                error = await self._join_round()
                if error == ErrorCode.NONE:
                    self._rebalances += 1
                    return
                await self._recover_from(error)
        finally:
            self._joining = False
        raise ConsumerGroupError(
            f"no stable generation after {JOIN_ROUNDS_MAX} rounds of JoinGroup and SyncGroup",
            group_id=self.group_id, error_code=ErrorCode.REBALANCE_IN_PROGRESS,
        )  # fmt: skip

    async def _join_round(self) -> ErrorCode:
        joined = await self._coordinator.join_group(
            self.group_id, self.member_id, None, PROTOCOL_TYPE, self._protocols,
            self._session_timeout_ms, self._rebalance_timeout_ms, self._client_id,
            CLIENT_HOST, False,
        )  # fmt: skip
        if joined.error_code != ErrorCode.NONE:
            return ErrorCode(joined.error_code)
        self.member_id = joined.member_id
        self.generation_id = joined.generation_id
        self.leader = joined.leader_id == joined.member_id
        assignments = self._assign(joined) if self.leader else []
        synced = await self._coordinator.sync_group(
            self.group_id, self.generation_id, self.member_id, None, PROTOCOL_TYPE,
            joined.protocol_name, assignments,
        )  # fmt: skip
        if synced.error_code != ErrorCode.NONE:
            return ErrorCode(synced.error_code)
        self.assignment = decode_assignment(synced.assignment)
        self.standby = decode_standby(synced.assignment)
        return ErrorCode.NONE

    def _assign(self, joined: JoinResult) -> list[tuple[str, bytes]]:
        """The leader's work: every member's partitions by the group's assignor."""
        subscriptions = {m.member_id: decode_subscription(m.metadata) for m in joined.members}
        topics = {topic for subscribed in subscriptions.values() for topic in subscribed}
        self._partition_counts = {topic: self._partition_count(topic) for topic in topics}
        count = self._partition_counts.__getitem__
        if joined.protocol_name == ASSIGNOR_NAME:
            wanted = {
                m.member_id: (subscriptions[m.member_id], decode_standby_replicas(m.metadata))
                for m in joined.members
            }
            return [
                (member, encode_assignment(tps, encode_assignment_user_data(standby)))
                for member, (tps, standby) in assign_copartitioned(wanted, count).items()
            ]
        assignor = ASSIGNORS[joined.protocol_name or ""]  # chosen among the ones we offered
        assigned = assignor(subscriptions, count)
        return [(member, encode_assignment(tps)) for member, tps in assigned.items()]

    async def _recover_from(self, error: ErrorCode) -> None:
        """Get ready for the next round after ``error``, or raise if it is fatal."""
        if error in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_INSTANCE_ID):
            self.member_id = ""  # expired or removed: join again as a new member
            self.generation_id = -1
        elif error == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
            await asyncio.sleep(RETRY_BACKOFF_MS / 1000)
        elif error not in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION):
            # NOT_COORDINATOR (closing), INCONSISTENT_GROUP_PROTOCOL (the group id is used
            # by something that is not a consumer), INVALID_SESSION_TIMEOUT, ...
            raise ConsumerGroupError("cannot join", group_id=self.group_id, error_code=error)

    # -- background -----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval_ms / 1000)
            if self._joining:
                continue  # parked in the coordinator, or about to sync: nothing to keep alive
            error = self._coordinator.heartbeat(
                self.group_id, self.generation_id, self.member_id, None
            )
            if self.rebalancing:
                continue  # during a rebalance it only keeps the session alive
            if error == ErrorCode.NONE:
                if self.leader and self._partitions_changed():
                    self._begin_rebalance()  # the leader's rejoin rebalances the group
                continue
            if error in (ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION,
                         ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_INSTANCE_ID):  # fmt: skip
                self._begin_rebalance()
            elif error == ErrorCode.NOT_COORDINATOR:  # the broker is closing
                logger.info("group %r: the coordinator closed; heartbeats stop", self.group_id)
                return
            else:  # COORDINATOR_NOT_AVAILABLE while it starts: try again next time
                logger.warning("group %r: heartbeat answered %s", self.group_id,
                               ErrorCode(error).name)  # fmt: skip

    def _partitions_changed(self) -> bool:
        return any(
            self._partition_count(topic) != count
            for topic, count in self._partition_counts.items()
        )

    def _begin_rebalance(self) -> None:
        self.rebalancing = True
        self.stable.clear()
        self._rejoin.set()

    async def _rebalance_loop(self) -> None:
        while True:
            await self._rejoin.wait()
            self._rejoin.clear()
            self.rebalancing = True
            try:
                await self._rebalance()
            except ConsumerGroupError as failure:
                self._failure = failure
                self.rebalancing = False
                self.stable.set()
                return  # out of the group: the consumer's next fetch raises

    async def _rebalance(self) -> None:
        revoked, self.assignment = self.assignment, frozenset()
        if revoked:
            await self._call(self._on_revoked, revoked)
        await self._join_and_sync()
        # A heartbeat from here on that finds a new rebalance asks for another round.
        self.rebalancing = False
        await self._call(self._on_assigned, self.assignment)
        if not self._rejoin.is_set():
            self.stable.set()

    async def _call(
        self, callback: PartitionsCallback, partitions: frozenset[TopicPartition]
    ) -> None:
        try:
            await callback(partitions)
        except Exception as failure:  # the listener's bug: report it, keep the group going
            logger.exception("group %r: rebalance callback failed", self.group_id)
            if self._failure is None:
                self._failure = failure
