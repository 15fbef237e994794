"""The group coordinator: Kafka's classic consumer-group protocol over the embedded log.

Sans-socket: the Kafka-protocol handlers call it with plain arguments and copy the small
immutable results (:mod:`.results`) into responses; protocol-level conditions come back as
:class:`~streamer.log.protocol.error_codes.ErrorCode` values, never as exceptions. Membership
and rebalances (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) are in :mod:`.membership`;
this module adds the lifecycle, committed offsets (OffsetCommit, OffsetFetch) and the admin
calls (DescribeGroups, ListGroups, DeleteGroups)::

    coordinator = GroupCoordinator(log)
    await coordinator.start()  # creates or replays __consumer_offsets
    joined = await coordinator.join_group("app", "", None, "consumer", [("range", meta)],
                                          45_000, 300_000, "client-1", "/127.0.0.1", False)
    ...
    await coordinator.close()

The coordinator picks a protocol every member supports and relays the leader's assignment;
the assignors (range, roundrobin, sticky, cooperative-sticky) run in the clients.

Not kept: group membership across restarts (only offsets are durable, so after a restart
members rejoin, as after a coordinator move in Kafka), offset expiry
(``offsets.retention.minutes``: committed offsets stay until DeleteGroups) and KIP-848's
consumer protocol. Transactional offset commits are held by the transaction coordinator
(:mod:`streamer.log.transactions`), which checks them with
:meth:`GroupCoordinator.txn_commit_error` and writes them to the offset store when their
transaction commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from ..clock import Clock
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..storage import Log
from .group import Group, GroupState
from .membership import GroupMembership, find_member
from .offsets import (
    OFFSETS_TOPIC,
    CommittedOffset,
    OffsetStore,
    OffsetUpdate,
    fits_string,
    write_error_code,
)
from .results import (
    CommitResult,
    CoordinatorStatistics,
    DeleteResult,
    FetchedOffset,
    FetchResult,
    GroupDescription,
    GroupStatistics,
    JoinResult,
    ListedGroup,
    ListGroupsResult,
    MemberDescription,
    SyncResult,
)

__all__ = ["GroupCoordinator"]

logger = logging.getLogger("streamer.log.groups")

# Kafka's defaults, except group.max.size (unbounded in Kafka) and
# group.initial.rebalance.delay.ms (3 s in Kafka; 0 so a lone consumer starts at once).
MIN_SESSION_TIMEOUT_MS = 6_000
MAX_SESSION_TIMEOUT_MS = 1_800_000
GROUP_MAX_SIZE = 1_000
OFFSET_METADATA_MAX_BYTES = 4_096
_UNCOMMITTED = CommittedOffset(-1, -1, "", -1)

# (topic, partition, offset, leader epoch, metadata) as OffsetCommit carries them
OffsetCommit = tuple[str, int, int, int, str | None]


class GroupCoordinator(GroupMembership):
    """Consumer groups and their committed offsets; see the module docstring."""

    def __init__(
        self,
        log: Log,
        *,
        offsets_topic: str = OFFSETS_TOPIC,
        offsets_partitions: int = 1,
        initial_rebalance_delay_ms: int = 0,
        min_session_timeout_ms: int = MIN_SESSION_TIMEOUT_MS,
        max_session_timeout_ms: int = MAX_SESSION_TIMEOUT_MS,
        group_max_size: int = GROUP_MAX_SIZE,
        offset_metadata_max_bytes: int = OFFSET_METADATA_MAX_BYTES,
        clock: Clock | None = None,
    ) -> None:
        """``clock`` defaults to the log's: one source of time for the whole broker."""
        if not 0 < min_session_timeout_ms <= max_session_timeout_ms:
            raise ValueError("expected 0 < min_session_timeout_ms <= max_session_timeout_ms")
        if initial_rebalance_delay_ms < 0 or group_max_size < 1:
            raise ValueError("expected initial_rebalance_delay_ms >= 0 and group_max_size >= 1")
        if not 0 <= offset_metadata_max_bytes <= 32767:  # stored as an int16-length string
            raise ValueError("offset_metadata_max_bytes must be within 0 and 32767")
        self.clock = clock or log.clock
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self.group_max_size = group_max_size
        self.offset_metadata_max_bytes = offset_metadata_max_bytes
        self.offsets = OffsetStore(
            log, self.clock, topic=offsets_topic, partitions=offsets_partitions
        )
        self._groups: dict[str, Group] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rebalances = 0
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the offsets topic, or replay it to rebuild every committed offset."""
        assert not self._started and not self._closed, "start() once"
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.offsets.load)
        self._started = True

    async def close(self) -> None:
        """Answer parked calls with NOT_COORDINATOR, stop the timers, finish the writes.

        Clients then look for the coordinator again and rejoin. The log stays open: it
        belongs to the broker.
        """
        if self._closed:
            return
        self._closed = True
        for group in self._groups.values():
            if group.timer is not None:
                group.timer.cancel()
            for member in group.members.values():
                member.answer_join(JoinResult.failed(ErrorCode.NOT_COORDINATOR, member.member_id))
                member.answer_sync(SyncResult.failed(ErrorCode.NOT_COORDINATOR))
        self._groups.clear()
        await self.offsets.close()

    async def __aenter__(self) -> GroupCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _inactive_error(
        self, loading: ErrorCode = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    ) -> ErrorCode | None:
        """The error for any call before start() (``loading``) or after close()."""
        if self._closed:
            return ErrorCode.NOT_COORDINATOR
        if not self._started:
            return loading
        return None

    def _discard_if_idle(self, group: Group) -> None:
        """Forget a group with no members and no offsets (clients make up group ids freely)."""
        if group.is_idle and not self.offsets.has_group(group.group_id):
            if group.timer is not None:
                group.timer.cancel()
                group.timer = None
            if self._groups.get(group.group_id) is group:
                del self._groups[group.group_id]

    # -- OffsetCommit and OffsetFetch -----------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: Sequence[OffsetCommit],
        retention_ms: int = -1,
    ) -> tuple[CommitResult, ...]:
        """Store ``(topic, partition, offset, leader_epoch, metadata)`` durably.

        Answers once the offsets are fsynced (under the offsets topic's ``flush.ms``).
        ``generation_id`` -1 with ``member_id`` "" is a commit from a consumer outside
        group management (``assign()``), allowed while the group has no members.
        ``retention_ms`` (OffsetCommit v2–v4) is accepted and ignored: offsets do not expire.
        """
        error = self._commit_error(group_id, generation_id, member_id, group_instance_id)
        codes = [error if error is not ErrorCode.NONE else self.offset_error(*o[:2], o[4])
                 for o in offsets]  # fmt: skip
        timestamp_ms = self.clock.time_ms()
        updates: list[OffsetUpdate] = [
            (topic, partition, CommittedOffset(offset, leader_epoch, metadata or "", timestamp_ms))
            for (topic, partition, offset, leader_epoch, metadata), code in zip(
                offsets, codes, strict=True
            )
            if code is ErrorCode.NONE
        ]
        if updates:
            try:
                await self.offsets.write(group_id, updates)
            except LogError as failure:
                logger.warning("committing offsets of group %r failed: %s", group_id, failure)
                written = write_error_code(failure)
                codes = [written if code is ErrorCode.NONE else code for code in codes]
        return tuple(
            CommitResult(o[0], o[1], code) for o, code in zip(offsets, codes, strict=True)
        )

    def _commit_error(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """Whether this member may commit now, in Kafka's order of checks."""
        inactive = self._inactive_error()
        if inactive is not None:
            return inactive
        if not fits_string(group_id):  # "" is allowed here, as in Kafka
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:  # offsets only, or no group at all
            return ErrorCode.NONE if generation_id < 0 else ErrorCode.ILLEGAL_GENERATION
        if group.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return ErrorCode.NONE
        member = find_member(group, member_id, group_instance_id)
        if isinstance(member, ErrorCode):
            return member
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state is GroupState.COMPLETING_REBALANCE:
            # It has this generation's JoinGroup answer but not its assignment yet.
            return ErrorCode.REBALANCE_IN_PROGRESS
        member.heard_from(self.clock.monotonic_ms())  # a commit shows the member is alive
        return ErrorCode.NONE

    def txn_commit_error(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """Whether a transactional commit (TxnOffsetCommit) may record offsets for the group.

        Kafka's checks: a producer that names no member (v0-2, or generation -1 and no ids)
        is not checked; one that does (v3+, KIP-447) must be the group's current member at
        its current generation, so a worker that lost its partitions in a rebalance cannot
        commit their offsets.
        """
        inactive = self._inactive_error()
        if inactive is not None:
            return inactive
        if not fits_string(group_id):
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is not None and group.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation_id < 0 and not member_id and group_instance_id is None:
            return ErrorCode.NONE
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID if member_id else ErrorCode.ILLEGAL_GENERATION
        if group_instance_id is not None and (
            group.static_members.get(group_instance_id, member_id) != member_id
        ):
            return ErrorCode.FENCED_INSTANCE_ID  # a newer incarnation took this instance id
        if member_id and member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    def offset_error(self, topic: str, partition: int, metadata: str | None) -> ErrorCode:
        """Whether one offset may be committed: its names and metadata fit (any commit)."""
        if not topic or not fits_string(topic):
            return ErrorCode.INVALID_TOPIC_EXCEPTION
        if partition < 0:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if metadata is not None and (
            not fits_string(metadata)
            or len(metadata.encode()) > self.offset_metadata_max_bytes
        ):
            return ErrorCode.OFFSET_METADATA_TOO_LARGE
        return ErrorCode.NONE

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[tuple[str, int]] | None
    ) -> FetchResult:
        """Committed offsets of ``(topic, partition)``s, or of every partition (None).

        A partition with nothing committed answers offset -1, leader epoch -1, metadata "".
        """
        inactive = self._inactive_error()
        if inactive is not None:
            return FetchResult(inactive, ())
        if not fits_string(group_id):
            return FetchResult(ErrorCode.INVALID_GROUP_ID, ())
        if partitions is None:
            found = self.offsets.group_offsets(group_id)
        else:
            found = [
                (topic, p, self.offsets.get(group_id, topic, p) or _UNCOMMITTED)
                for topic, p in partitions
            ]
        fetched = tuple(
            FetchedOffset(topic, p, c.offset, c.leader_epoch, c.metadata) for topic, p, c in found
        )
        return FetchResult(ErrorCode.NONE, fetched)

    # -- DescribeGroups, ListGroups, DeleteGroups -----------------------------------------

    def describe_groups(self, group_ids: Iterable[str]) -> tuple[GroupDescription, ...]:
        """Kafka's summary: member metadata and assignments only while Stable.

        An unknown group is described as "Dead" with no error, as Kafka does.
        """
        return tuple(self._describe(group_id) for group_id in group_ids)

    def _describe(self, group_id: str) -> GroupDescription:
        error = self._inactive_error()
        if error is None and not fits_string(group_id):
            error = ErrorCode.INVALID_GROUP_ID
        if error is not None:
            return GroupDescription(group_id, error, "", "", "", ())
        group = self._groups.get(group_id)
        if group is None:
            state = GroupState.EMPTY if self.offsets.has_group(group_id) else GroupState.DEAD
            return GroupDescription(group_id, ErrorCode.NONE, state.value, "", "", ())
        stable = group.state is GroupState.STABLE
        members = tuple(
            MemberDescription(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.metadata(group.protocol_name) if stable else b"",
                m.assignment if stable else b"",
            )
            for m in group.members.values()
        )
        protocol_name = (group.protocol_name or "") if stable else ""
        return GroupDescription(
            group_id, ErrorCode.NONE, group.state.value, group.protocol_type or "",
            protocol_name, members,
        )  # fmt: skip

    def list_groups(self, states_filter: Iterable[str] | None = None) -> ListGroupsResult:
        """Every known group, or those in ``states_filter`` (ListGroups v4, any case)."""
        inactive = self._inactive_error()
        if inactive is not None:
            return ListGroupsResult(inactive, ())
        wanted = None if states_filter is None else {s.lower() for s in states_filter}
        listed = [
            ListedGroup(d.group_id, d.protocol_type, d.state)
            for d in map(self._describe, self._known_group_ids())
            if d.state != GroupState.DEAD and (not wanted or d.state.lower() in wanted)
        ]
        return ListGroupsResult(ErrorCode.NONE, tuple(listed))

    def _known_group_ids(self) -> list[str]:
        return sorted(set(self._groups) | set(self.offsets.group_ids()))

    async def delete_groups(self, group_ids: Iterable[str]) -> tuple[DeleteResult, ...]:
        """Delete groups without members, their committed offsets durably (tombstones).

        NON_EMPTY_GROUP while a group has members, GROUP_ID_NOT_FOUND for an unknown one.
        """
        started = {group_id: self._start_deleting(group_id) for group_id in group_ids}
        deleting = [group for group in started.values() if isinstance(group, Group)]
        finished = await asyncio.gather(*(self._delete(group) for group in deleting))
        codes = {group_id: outcome for group_id, outcome in started.items()
                 if isinstance(outcome, ErrorCode)}  # fmt: skip
        codes.update((group.group_id, code) for group, code in zip(deleting, finished, strict=True))
        return tuple(DeleteResult(group_id, codes[group_id]) for group_id in started)

    def _start_deleting(self, group_id: str) -> Group | ErrorCode:
        """Mark the group Dead before any await, so no member joins it meanwhile."""
        inactive = self._inactive_error()
        if inactive is not None:
            return inactive
        if not fits_string(group_id):
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            if not self.offsets.has_group(group_id):
                return ErrorCode.GROUP_ID_NOT_FOUND
            group = self._groups[group_id] = Group(group_id)
        if group.state is GroupState.DEAD:
            return ErrorCode.GROUP_ID_NOT_FOUND  # another deletion is under way
        if group.state is not GroupState.EMPTY:
            return ErrorCode.NON_EMPTY_GROUP
        group.state = GroupState.DEAD
        group.pending_members.clear()
        return group

    async def _delete(self, group: Group) -> ErrorCode:
        try:
            await self.offsets.delete_group(group.group_id)
        except LogError as failure:
            logger.warning("deleting group %r failed: %s", group.group_id, failure)
            group.state = GroupState.EMPTY
            self._discard_if_idle(group)
            return write_error_code(failure)
        if group.timer is not None:
            group.timer.cancel()
        if self._groups.get(group.group_id) is group:
            del self._groups[group.group_id]
        return ErrorCode.NONE

    # -- statistics -----------------------------------------------------------------------

    def statistics(self) -> CoordinatorStatistics:
        groups = []
        for group_id in self._known_group_ids():
            group = self._groups.get(group_id) or Group(group_id)  # offsets only: Empty
            groups.append(
                GroupStatistics(
                    group_id,
                    group.state.value,
                    group.generation_id,
                    group.protocol_type or "",
                    group.protocol_name or "",
                    len(group.members),
                    group.rebalances,
                    self.offsets.count(group_id),
                )
            )
        return CoordinatorStatistics(self.offsets.topic, tuple(groups), self._rebalances)
