"""One consumer group: its members and the classic rebalance state machine.

States carry Kafka's names, as DescribeGroups and ListGroups show them::

    Empty
      │ a member joins                        ▲ no member rejoined
      ▼                                       │
    PreparingRebalance ───────────────────────┘
      │ every member rejoined,                              ▲
      ▼ or the rebalance timeout passed                     │ a member joins, leaves,
    CompletingRebalance ────────────────────────────────────┤ expires or rejoins with
      │ the leader's SyncGroup                              │ new protocols (the leader:
      ▼                                                     │ any rejoin)
    Stable ─────────────────────────────────────────────────┘

    Dead: while DeleteGroups writes the group's tombstones.

A JoinGroup or SyncGroup that has to wait parks a future on its member; the transitions here
answer those futures. The coordinator validates requests, keeps the timers and calls these
methods; nothing here reads a clock (``now_ms`` comes in) or does I/O.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..protocol.error_codes import ErrorCode
from .results import JoinMember, JoinResult, SyncResult

__all__ = ["Group", "GroupState", "Member"]


class GroupState(StrEnum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"  # being deleted; requests get COORDINATOR_NOT_AVAILABLE meanwhile


@dataclass(eq=False, slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata), in the member's preference
    deadline_ms: int  # monotonic: expired once passed, unless a call of it is parked
    assignment: bytes = b""
    join_future: asyncio.Future[JoinResult] | None = None
    sync_future: asyncio.Future[SyncResult] | None = None

    def metadata(self, protocol_name: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol_name:
                return metadata
        return b""

    def supports(self, protocol_name: str) -> bool:
        return any(name == protocol_name for name, _ in self.protocols)

    def heard_from(self, now_ms: int) -> None:
        self.deadline_ms = now_ms + self.session_timeout_ms

    @property
    def parked(self) -> bool:
        """A JoinGroup or SyncGroup of this member waits for the rebalance."""
        return self.join_future is not None or self.sync_future is not None

    def expired(self, now_ms: int) -> bool:
        # A parked member is waiting on us, not silent.
        return not self.parked and now_ms >= self.deadline_ms

    def answer_join(self, result: JoinResult) -> None:
        future, self.join_future = self.join_future, None
        if future is not None and not future.done():
            future.set_result(result)

    def answer_sync(self, result: SyncResult) -> None:
        future, self.sync_future = self.sync_future, None
        if future is not None and not future.done():
            future.set_result(result)


class Group:
    """A group's membership, generation and state; see the module docstring."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}  # in joining order: the first is leader by default
        self.static_members: dict[str, str] = {}  # group.instance.id → member id
        # Ids handed out with MEMBER_ID_REQUIRED, not yet used to join → their deadline.
        self.pending_members: dict[str, int] = {}
        self.rebalance_deadline_ms = 0  # the join phase ends by then, rejoined or not
        self.join_not_before_ms = 0  # group.initial.rebalance.delay.ms lets more members arrive
        # Members of this generation that have not sent SyncGroup yet, and when they must
        # have: a member that heartbeats but never syncs would otherwise hold up the group.
        self.awaiting_sync: set[str] = set()
        self.sync_deadline_ms = 0
        self.rebalances = 0
        # The coordinator's timer for this group, and the deadline it was set for.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due_ms: int | None = None

    # -- membership -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.members) + len(self.pending_members)

    @property
    def is_idle(self) -> bool:
        return self.state is GroupState.EMPTY and not self.pending_members

    def add(self, member: Member) -> None:
        assert member.member_id not in self.members, "member ids are unique"
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id

    def remove(self, member_id: str, error_code: ErrorCode) -> Member:
        """Drop a member; its parked calls are answered with ``error_code``."""
        member = self.members.pop(member_id)
        self.awaiting_sync.discard(member_id)
        member.answer_join(JoinResult.failed(error_code, member_id))
        member.answer_sync(SyncResult.failed(error_code))
        instance_id = member.group_instance_id
        if instance_id is not None and self.static_members.get(instance_id) == member_id:
            del self.static_members[instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def replace(self, old_id: str, member: Member) -> None:
        """A static member's new incarnation takes the old one's place (and leadership)."""
        was_leader = self.leader_id == old_id
        must_sync = old_id in self.awaiting_sync
        self.remove(old_id, ErrorCode.FENCED_INSTANCE_ID)
        self.add(member)
        if was_leader:
            self.leader_id = member.member_id
        if must_sync:
            self.awaiting_sync.add(member.member_id)

    def supports(
        self, protocol_type: str, protocols: Sequence[tuple[str, bytes]], replacing: str | None
    ) -> bool:
        """Whether a member with these protocols may join (``replacing``: its old self)."""
        others = [member for key, member in self.members.items() if key != replacing]
        if not others:  # an empty group takes any protocol type, as Kafka's does
            return True
        if protocol_type != self.protocol_type:
            return False
        return any(all(other.supports(name) for other in others) for name, _ in protocols)

    def select_protocol(self) -> str:
        """The protocol every member supports that most members list first among those.

        Kafka's rule: each member votes for the first protocol of its own list that all
        members support; ties go to the earlier protocol in the leader's list.
        """
        members = list(self.members.values())
        leader = self.members.get(self.leader_id or "", members[0])
        candidates = [
            name for name, _ in leader.protocols if all(m.supports(name) for m in members)
        ]
        assert candidates, "joins are refused unless a common protocol remains"
        votes = Counter(
            next(name for name, _ in member.protocols if name in candidates)
            for member in members
        )
        return max(candidates, key=lambda name: votes[name])

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def join_result(self, member: Member) -> JoinResult:
        """The current generation as ``member`` is told it; the leader gets everyone."""
        members: tuple[JoinMember, ...] = ()
        if member.member_id == self.leader_id:
            members = tuple(
                JoinMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                for m in self.members.values()
            )
        return JoinResult(
            ErrorCode.NONE,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            self.leader_id or "",
            member.member_id,
            members,
        )

    # -- the rebalance --------------------------------------------------------------------

    def prepare_rebalance(self, now_ms: int, initial_delay_ms: int) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            # The assignment being worked out is for members that are changing: whoever
            # waits in SyncGroup must rejoin instead.
            for member in self.members.values():
                member.assignment = b""
                if member.sync_future is not None:
                    member.heard_from(now_ms)  # its session restarts when it is answered
                    member.answer_sync(SyncResult.failed(ErrorCode.REBALANCE_IN_PROGRESS))
        self.awaiting_sync.clear()
        timeout_ms = self.rebalance_timeout_ms()
        delay_ms = min(initial_delay_ms, timeout_ms) if self.state is GroupState.EMPTY else 0
        self.state = GroupState.PREPARING_REBALANCE
        self.rebalance_deadline_ms = now_ms + timeout_ms
        self.join_not_before_ms = now_ms + delay_ms

    def extend_initial_delay(self, now_ms: int, initial_delay_ms: int) -> None:
        """A new member during the initial delay: wait for more (up to the rebalance timeout)."""
        if self.join_not_before_ms > now_ms:
            self.join_not_before_ms = min(now_ms + initial_delay_ms, self.rebalance_deadline_ms)

    def join_phase_over(self, now_ms: int) -> bool:
        if self.state is not GroupState.PREPARING_REBALANCE:
            return False
        if now_ms >= self.rebalance_deadline_ms:
            return True
        all_rejoined = all(m.join_future is not None for m in self.members.values())
        return now_ms >= self.join_not_before_ms and all_rejoined and not self.pending_members

    def complete_join(self, now_ms: int) -> None:
        """End the join phase: drop who did not rejoin, start the next generation."""
        for member in list(self.members.values()):
            if member.join_future is None:
                self.remove(member.member_id, ErrorCode.UNKNOWN_MEMBER_ID)
        self.generation_id += 1
        self.rebalances += 1
        if not self.members:
            self.state = GroupState.EMPTY
            self.protocol_name = None
            self.leader_id = None
            return
        self.protocol_name = self.select_protocol()
        self.state = GroupState.COMPLETING_REBALANCE
        self.awaiting_sync = set(self.members)
        self.sync_deadline_ms = now_ms + self.rebalance_timeout_ms()
        for member in self.members.values():
            member.heard_from(now_ms)
            member.answer_join(self.join_result(member))

    def complete_sync(self, assignments: Mapping[str, bytes], now_ms: int) -> None:
        """The leader's assignment arrived: hand every member its part; the group is Stable."""
        self.state = GroupState.STABLE
        for member in self.members.values():
            member.assignment = assignments.get(member.member_id, b"")
            if member.sync_future is not None:
                member.heard_from(now_ms)
                member.answer_sync(
                    SyncResult(
                        ErrorCode.NONE, self.protocol_type, self.protocol_name, member.assignment
                    )
                )

    # -- time -----------------------------------------------------------------------------

    def remove_expired(self, now_ms: int) -> bool:
        """Drop members whose session ran out or who never synced, and stale pending ids."""
        expired = [m.member_id for m in self.members.values() if m.expired(now_ms)]
        if self.awaiting_sync and now_ms >= self.sync_deadline_ms:
            expired.extend(self.awaiting_sync.difference(expired))
        for member_id in expired:
            self.remove(member_id, ErrorCode.UNKNOWN_MEMBER_ID)
        pending = [key for key, deadline in self.pending_members.items() if now_ms >= deadline]
        for member_id in pending:
            del self.pending_members[member_id]
        return bool(expired or pending)

    def next_deadline_ms(self, now_ms: int) -> int | None:
        """When something may next fall due: a session, a pending id, the join phase."""
        deadlines = [m.deadline_ms for m in self.members.values() if not m.parked]
        deadlines.extend(self.pending_members.values())
        if self.awaiting_sync:
            deadlines.append(self.sync_deadline_ms)
        if self.state is GroupState.PREPARING_REBALANCE:
            deadlines.append(self.rebalance_deadline_ms)
            if self.join_not_before_ms > now_ms:  # once passed, it is nothing to wake up for
                deadlines.append(self.join_not_before_ms)
        return min(deadlines, default=None)
