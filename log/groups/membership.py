"""JoinGroup, SyncGroup, Heartbeat and LeaveGroup, and the timers behind them.

:class:`GroupMembership` holds these steps for :class:`~streamer.log.groups.GroupCoordinator`,
which inherits them (as ``PartitionLog`` inherits its reads). Everything runs on the event
loop, so no locks: a request's checks and state changes happen before its first ``await``,
and a call that has to wait (a JoinGroup until the join phase ends, a follower's SyncGroup
until the leader's arrives) parks a future on its member.

Time comes from one injectable clock (``monotonic_ms``). Each group has at most one asyncio
timer, set for the group's earliest deadline (a session, a pending member id, the end of the
join phase); a heartbeat only moves a deadline later, so it never re-arms the timer, and a
timer that fires early finds nothing due and re-arms itself. :meth:`run_timers` does what the
timers do, for tests that drive a ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clock import Clock
from ..protocol.error_codes import ErrorCode
from .group import Group, GroupState, Member
from .offsets import fits_string
from .results import JoinResult, LeaveResult, LeftMember, SyncResult

__all__ = ["GroupMembership", "find_member"]

# A new member's id is "<client id>-<uuid>"; the client id part is cut so the id stays a
# short Kafka string whatever the client sends.
_MEMBER_ID_PREFIX_CHARS_MAX = 255


@dataclass(frozen=True, slots=True)
class _Join:
    """A JoinGroup's arguments, as they travel through the steps below."""

    group_id: str
    member_id: str
    group_instance_id: str | None
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    require_known_member_id: bool

    def unchanged_for(self, group: Group, member: Member) -> bool:
        """Whether this join brings nothing new for ``member`` (no rebalance needed)."""
        return group.protocol_type == self.protocol_type and member.protocols == self.protocols

    def new_member(self, member_id: str, now_ms: int) -> Member:
        return Member(
            member_id,
            self.group_instance_id,
            self.client_id,
            self.client_host,
            self.session_timeout_ms,
            self.rebalance_timeout_ms,
            self.protocols,
            deadline_ms=now_ms + self.session_timeout_ms,
        )


class GroupMembership:
    # Set up by GroupCoordinator.__init__ and start().
    clock: Clock
    initial_rebalance_delay_ms: int
    min_session_timeout_ms: int
    max_session_timeout_ms: int
    group_max_size: int
    _groups: dict[str, Group]
    _loop: asyncio.AbstractEventLoop | None
    _rebalances: int

    if TYPE_CHECKING:  # provided by GroupCoordinator

        def _inactive_error(
            self, loading: ErrorCode = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        ) -> ErrorCode | None: ...

        def _discard_if_idle(self, group: Group) -> None: ...

    # -- JoinGroup ------------------------------------------------------------------------

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
    ) -> JoinResult:
        """Join (or rejoin) ``group_id``; waits until the join phase ends.

        ``member_id`` is "" for a new member. ``require_known_member_id`` (JoinGroup v4+):
        a new dynamic member gets MEMBER_ID_REQUIRED and an id to rejoin with. A
        ``rebalance_timeout_ms`` ≤ 0 (JoinGroup v0 has none) means the session timeout.
        """
        error = self._join_error(group_id, protocol_type, protocols, session_timeout_ms)
        if error is not None:
            return JoinResult.failed(error, member_id)
        request = _Join(
            group_id, member_id, group_instance_id, protocol_type,
            tuple((name, bytes(metadata)) for name, metadata in protocols),
            session_timeout_ms,
            rebalance_timeout_ms if rebalance_timeout_ms > 0 else session_timeout_ms,
            client_id, client_host, require_known_member_id,
        )  # fmt: skip
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult.failed(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._groups[group_id] = Group(group_id)
        now_ms = self.clock.monotonic_ms()
        outcome = self._join(group, request, now_ms)
        if isinstance(outcome, JoinResult):
            self._settle(group, now_ms)
            return outcome
        future = outcome.join_future  # before _settle, which may answer it at once
        assert future is not None
        self._settle(group, now_ms)
        return await self._wait_for_join(group, outcome, future)

    def _join_error(
        self,
        group_id: str,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
    ) -> ErrorCode | None:
        inactive = self._inactive_error()
        if inactive is not None:
            return inactive
        if not group_id or not fits_string(group_id):
            return ErrorCode.INVALID_GROUP_ID
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if not protocol_type or not protocols:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return None

    def _join(self, group: Group, request: _Join, now_ms: int) -> JoinResult | Member:
        """Answer now (a JoinResult) or park the call (the member whose future to await)."""
        if group.state is GroupState.DEAD:
            return JoinResult.failed(ErrorCode.COORDINATOR_NOT_AVAILABLE, request.member_id)
        replacing = request.member_id or group.static_members.get(request.group_instance_id or "")
        if not group.supports(request.protocol_type, request.protocols, replacing):
            return JoinResult.failed(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, request.member_id)
        if request.member_id:
            return self._join_known(group, request, now_ms)
        return self._join_new(group, request, now_ms)

    def _join_new(self, group: Group, request: _Join, now_ms: int) -> JoinResult | Member:
        instance_id = request.group_instance_id
        prefix = instance_id if instance_id is not None else request.client_id
        member_id = f"{prefix[:_MEMBER_ID_PREFIX_CHARS_MAX]}-{uuid.uuid4()}"
        if instance_id is not None and instance_id in group.static_members:
            return self._replace_static(group, group.static_members[instance_id], member_id,
                                        request, now_ms)  # fmt: skip
        if group.size >= self.group_max_size:
            return JoinResult.failed(ErrorCode.GROUP_MAX_SIZE_REACHED, "")
        if instance_id is None and request.require_known_member_id:
            # KIP-394: the id is only a member once it rejoins, so a client that died
            # between the two calls leaves no member behind to time out.
            group.pending_members[member_id] = now_ms + request.session_timeout_ms
            return JoinResult.failed(ErrorCode.MEMBER_ID_REQUIRED, member_id)
        return self._add_member(group, request.new_member(member_id, now_ms), request, now_ms)

    def _join_known(self, group: Group, request: _Join, now_ms: int) -> JoinResult | Member:
        member_id = request.member_id
        if group.pending_members.pop(member_id, None) is not None:
            return self._add_member(group, request.new_member(member_id, now_ms), request, now_ms)
        found = find_member(group, member_id, request.group_instance_id)
        if isinstance(found, ErrorCode):
            return JoinResult.failed(found, member_id)
        unchanged = request.unchanged_for(group, found)
        follower = member_id != group.leader_id
        if unchanged and (
            group.state is GroupState.COMPLETING_REBALANCE  # a retry of an answered JoinGroup
            or (group.state is GroupState.STABLE and follower)
        ):
            found.heard_from(now_ms)
            return group.join_result(found)
        # Changed protocols, or the leader rejoining (to reassign, e.g. for new partitions):
        # a new rebalance. In PreparingRebalance this is the member's rejoin.
        return self._rejoin(group, found, request, now_ms)

    def _add_member(self, group: Group, member: Member, request: _Join, now_ms: int) -> Member:
        group.add(member)
        return self._rejoin(group, member, request, now_ms)

    def _rejoin(self, group: Group, member: Member, request: _Join, now_ms: int) -> Member:
        """Park ``member``'s JoinGroup and make sure a join phase is under way."""
        member.answer_join(JoinResult.failed(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id))
        member.protocols = request.protocols
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.client_id, member.client_host = request.client_id, request.client_host
        assert self._loop is not None, "start() sets the loop"
        member.join_future = self._loop.create_future()
        if len(group.members) == 1:
            group.protocol_type = request.protocol_type  # the first member sets it
        if group.state is GroupState.PREPARING_REBALANCE:
            group.extend_initial_delay(now_ms, self.initial_rebalance_delay_ms)
        else:
            group.prepare_rebalance(now_ms, self.initial_rebalance_delay_ms)
        return member

    def _replace_static(
        self, group: Group, old_id: str, member_id: str, request: _Join, now_ms: int
    ) -> JoinResult | Member:
        """A restarted static member takes its old id's place (KIP-345).

        With the same protocols in a Stable group it gets the current generation and its
        old assignment without a rebalance; the leader, or anything else, rebalances so the
        new leader id gets the member list.
        """
        old = group.members[old_id]
        member = request.new_member(member_id, now_ms)
        member.assignment = old.assignment
        unchanged = request.unchanged_for(group, old)
        was_leader = group.leader_id == old_id
        group.replace(old_id, member)
        if group.state is GroupState.STABLE and unchanged and not was_leader:
            return group.join_result(member)
        return self._rejoin(group, member, request, now_ms)

    async def _wait_for_join(
        self, group: Group, member: Member, future: asyncio.Future[JoinResult]
    ) -> JoinResult:
        try:
            return await future
        except asyncio.CancelledError:
            if member.join_future is future:
                member.join_future = None
                self._caller_gone(group, member)
            raise

    def _caller_gone(self, group: Group, member: Member) -> None:
        """A parked call was cancelled (its connection closed): the member is no longer
        waiting on us, so its session runs from now, and it counts as not rejoined."""
        now_ms = self.clock.monotonic_ms()
        member.heard_from(now_ms)
        self._settle(group, now_ms)

    # -- SyncGroup ------------------------------------------------------------------------

    async def sync_group(
        self,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Sequence[tuple[str, bytes]],
    ) -> SyncResult:
        """Get this member's assignment; the leader brings everyone's in ``assignments``.

        ``protocol_type``/``protocol_name`` (SyncGroup v5+) are checked when given.
        A follower waits for the leader's SyncGroup.
        """
        found = self._sync_member(group_id, generation_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return SyncResult.failed(found)
        group, member = found
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult.failed(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        now_ms = self.clock.monotonic_ms()
        member.heard_from(now_ms)
        group.awaiting_sync.discard(member_id)
        if group.state is GroupState.STABLE:
            return SyncResult(
                ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment
            )
        # CompletingRebalance. A second SyncGroup replaces the first: answer the newer one.
        member.answer_sync(SyncResult.failed(ErrorCode.REBALANCE_IN_PROGRESS))
        assert self._loop is not None
        future: asyncio.Future[SyncResult] = self._loop.create_future()
        member.sync_future = future
        if member_id == group.leader_id:
            group.complete_sync({key: bytes(value) for key, value in assignments}, now_ms)
        self._settle(group, now_ms)
        try:
            return await future
        except asyncio.CancelledError:
            if member.sync_future is future:
                member.sync_future = None
                self._caller_gone(group, member)
            raise

    def _sync_member(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> tuple[Group, Member] | ErrorCode:
        found = self._member_of(group_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return found
        group, _ = found
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return found

    def _member_of(
        self, group_id: str, member_id: str, group_instance_id: str | None
    ) -> tuple[Group, Member] | ErrorCode:
        """The checks SyncGroup and Heartbeat share, in Kafka's order."""
        # Clients treat COORDINATOR_LOAD_IN_PROGRESS as fatal here: they only retry it on
        # JoinGroup and the offset calls.
        inactive = self._inactive_error(loading=ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if inactive is not None:
            return inactive
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.state is GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        member = find_member(group, member_id, group_instance_id)
        return member if isinstance(member, ErrorCode) else (group, member)

    # -- Heartbeat and LeaveGroup ---------------------------------------------------------

    def heartbeat(
        self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """Keep the member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin."""
        found = self._member_of(group_id, member_id, group_instance_id)
        if isinstance(found, ErrorCode):
            return found
        group, member = found
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        now_ms = self.clock.monotonic_ms()
        member.heard_from(now_ms)
        if group.timer is None:  # else it fires by the old deadline and re-arms from there
            self._arm(group, now_ms)
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        # Stable, or CompletingRebalance: a member may heartbeat between its JoinGroup
        # answer and its SyncGroup.
        return ErrorCode.NONE

    def leave_group(
        self, group_id: str, members: Sequence[tuple[str, str | None]]
    ) -> LeaveResult:
        """Remove ``(member_id, group_instance_id)`` members at once; the rest rebalance.

        Not async: nothing here waits. LeaveGroup v0–v2 carry one member and no
        per-member errors: answer those with ``members[0].error_code`` when it is not NONE.
        """
        inactive = self._inactive_error(loading=ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if inactive is not None:
            return LeaveResult(inactive, ())
        if not group_id:
            return LeaveResult(ErrorCode.INVALID_GROUP_ID, ())
        group = self._groups.get(group_id)
        if group is None:
            unknown = ErrorCode.UNKNOWN_MEMBER_ID
            return LeaveResult(ErrorCode.NONE, tuple(LeftMember(m, i, unknown) for m, i in members))
        if group.state is GroupState.DEAD:
            return LeaveResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, ())
        before = len(group.members)
        results = tuple(
            LeftMember(member_id, instance_id, _leave(group, member_id, instance_id))
            for member_id, instance_id in members
        )
        now_ms = self.clock.monotonic_ms()
        if len(group.members) < before:
            self._rebalance_without(group, now_ms)
        self._settle(group, now_ms)
        return LeaveResult(ErrorCode.NONE, results)

    # -- time -----------------------------------------------------------------------------

    def run_timers(self) -> None:
        """Expire silent members and end overdue join phases, by the clock's time now.

        The coordinator's own timers call this per group; a test driving a
        ``ManualClock`` calls it after advancing the clock.
        """
        now_ms = self.clock.monotonic_ms()
        for group in list(self._groups.values()):
            self._check(group, now_ms)

    def _check(self, group: Group, now_ms: int) -> None:
        before = len(group.members)
        group.remove_expired(now_ms)
        if len(group.members) < before:
            self._rebalance_without(group, now_ms)
        self._settle(group, now_ms)

    def _rebalance_without(self, group: Group, now_ms: int) -> None:
        """Members left or expired: the others must rejoin to get new assignments."""
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            group.prepare_rebalance(now_ms, self.initial_rebalance_delay_ms)

    def _settle(self, group: Group, now_ms: int) -> None:
        """After any change: end the join phase if it is over, re-arm, forget idle groups."""
        if group.join_phase_over(now_ms):
            group.complete_join(now_ms)
            self._rebalances += 1
        self._arm(group, now_ms)
        self._discard_if_idle(group)

    def _arm(self, group: Group, now_ms: int) -> None:
        if self._loop is None or self._groups.get(group.group_id) is not group:
            return
        due_ms = group.next_deadline_ms(now_ms)
        if group.timer is not None:
            armed_ms = group.timer_due_ms
            if due_ms is not None and armed_ms is not None and armed_ms <= due_ms:
                return  # it fires early enough, and re-arms then
            group.timer.cancel()
            group.timer = None
        if due_ms is not None:
            delay_s = max(due_ms - now_ms, 0) / 1000
            group.timer = self._loop.call_later(delay_s, self._on_timer, group)
            group.timer_due_ms = due_ms

    def _on_timer(self, group: Group) -> None:
        group.timer = None
        group.timer_due_ms = None
        if self._groups.get(group.group_id) is group:
            self._check(group, self.clock.monotonic_ms())


def find_member(group: Group, member_id: str, group_instance_id: str | None) -> Member | ErrorCode:
    """The member a request speaks for, checked as Kafka does (validateCurrentMember)."""
    if group_instance_id is not None:
        current = group.static_members.get(group_instance_id)
        if current is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if current != member_id:
            return ErrorCode.FENCED_INSTANCE_ID  # a newer incarnation took this instance id
    member = group.members.get(member_id)
    return member if member is not None else ErrorCode.UNKNOWN_MEMBER_ID


def _leave(group: Group, member_id: str, group_instance_id: str | None) -> ErrorCode:
    if group_instance_id is not None:
        current = group.static_members.get(group_instance_id)
        if current is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if member_id and member_id != current:
            return ErrorCode.FENCED_INSTANCE_ID
        group.remove(current, ErrorCode.UNKNOWN_MEMBER_ID)
        return ErrorCode.NONE
    if group.pending_members.pop(member_id, None) is not None:
        return ErrorCode.NONE
    if member_id in group.members:
        group.remove(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
        return ErrorCode.NONE
    return ErrorCode.UNKNOWN_MEMBER_ID
