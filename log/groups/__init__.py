"""Consumer groups: membership, generations, rebalances, and committed offsets.

:class:`GroupCoordinator` is Kafka's classic group coordinator without the sockets: the
protocol handlers call it and copy its results into responses. Committed offsets live in
the compacted ``__consumer_offsets`` topic of the :class:`~streamer.log.Log` (see
:mod:`.offsets` for the record format) and survive restarts; membership does not.
"""

from .coordinator import GroupCoordinator
from .group import GroupState
from .offsets import OFFSETS_TOPIC, CommittedOffset, OffsetStore
from .results import (
    CommitResult,
    CoordinatorStatistics,
    DeleteResult,
    FetchedOffset,
    FetchResult,
    GroupDescription,
    GroupStatistics,
    JoinMember,
    JoinResult,
    LeaveResult,
    LeftMember,
    ListedGroup,
    ListGroupsResult,
    MemberDescription,
    SyncResult,
)

__all__ = [
    "OFFSETS_TOPIC",
    "CommitResult",
    "CommittedOffset",
    "CoordinatorStatistics",
    "DeleteResult",
    "FetchResult",
    "FetchedOffset",
    "GroupCoordinator",
    "GroupDescription",
    "GroupState",
    "GroupStatistics",
    "JoinMember",
    "JoinResult",
    "LeaveResult",
    "LeftMember",
    "ListGroupsResult",
    "ListedGroup",
    "MemberDescription",
    "OffsetStore",
    "SyncResult",
]
