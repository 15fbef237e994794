"""What the group coordinator answers with: small immutable values, Kafka error codes inside.

A protocol-level condition (an unknown member, a stale generation, a rebalance under way) is
an :class:`~streamer.log.protocol.error_codes.ErrorCode` in the result, never an exception:
the Kafka-protocol handlers copy the code into the response. Sequences are tuples, so a
result handed to several parked callers cannot be changed by one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..protocol.error_codes import ErrorCode

__all__ = [
    "CommitResult",
    "CoordinatorStatistics",
    "DeleteResult",
    "FetchResult",
    "FetchedOffset",
    "GroupDescription",
    "GroupStatistics",
    "JoinMember",
    "JoinResult",
    "LeaveResult",
    "LeftMember",
    "ListGroupsResult",
    "ListedGroup",
    "MemberDescription",
    "SyncResult",
]


class JoinMember(NamedTuple):
    """A member as the leader sees it in its JoinGroup response."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes  # the member's metadata for the protocol the group selected


class JoinResult(NamedTuple):
    error_code: ErrorCode
    generation_id: int  # -1 with an error
    protocol_type: str | None  # None with an error
    protocol_name: str | None  # None with an error
    leader_id: str  # "" with an error
    member_id: str  # the caller's id; with MEMBER_ID_REQUIRED, the id to rejoin with
    members: tuple[JoinMember, ...]  # the whole group for the leader, empty for the others

    @classmethod
    def failed(cls, error_code: ErrorCode, member_id: str) -> JoinResult:
        return cls(error_code, -1, None, None, "", member_id, ())


class SyncResult(NamedTuple):
    error_code: ErrorCode
    protocol_type: str | None
    protocol_name: str | None
    assignment: bytes  # b"" with an error

    @classmethod
    def failed(cls, error_code: ErrorCode) -> SyncResult:
        return cls(error_code, None, None, b"")


class LeftMember(NamedTuple):
    member_id: str
    group_instance_id: str | None
    error_code: ErrorCode


class LeaveResult(NamedTuple):
    error_code: ErrorCode  # the request's error; per-member errors are in ``members``
    members: tuple[LeftMember, ...]


class CommitResult(NamedTuple):
    topic: str
    partition: int
    error_code: ErrorCode


class FetchedOffset(NamedTuple):
    topic: str
    partition: int
    offset: int  # -1 when nothing is committed
    leader_epoch: int  # -1 when unknown
    metadata: str  # "" when nothing was given


class FetchResult(NamedTuple):
    error_code: ErrorCode
    partitions: tuple[FetchedOffset, ...]


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes  # b"" unless the group is Stable (as Kafka's DescribeGroups)
    assignment: bytes  # b"" unless the group is Stable


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    error_code: ErrorCode
    state: str  # "Empty", "PreparingRebalance", "CompletingRebalance", "Stable" or "Dead"
    protocol_type: str  # "" when unknown
    protocol_name: str  # "" unless the group is Stable
    members: tuple[MemberDescription, ...]


class ListedGroup(NamedTuple):
    group_id: str
    protocol_type: str
    state: str


class ListGroupsResult(NamedTuple):
    error_code: ErrorCode
    groups: tuple[ListedGroup, ...]


class DeleteResult(NamedTuple):
    group_id: str
    error_code: ErrorCode


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    group_id: str
    state: str
    generation_id: int
    protocol_type: str
    protocol_name: str
    members: int
    rebalances: int  # join phases completed since the coordinator started
    committed_offsets: int


@dataclass(frozen=True, slots=True)
class CoordinatorStatistics:
    offsets_topic: str
    groups: tuple[GroupStatistics, ...]
    rebalances: int

    @property
    def members(self) -> int:
        return sum(group.members for group in self.groups)

    @property
    def committed_offsets(self) -> int:
        return sum(group.committed_offsets for group in self.groups)
