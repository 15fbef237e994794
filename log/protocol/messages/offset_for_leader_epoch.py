"""OffsetForLeaderEpoch (key 23), v2-3; flexible versions (4+) are not served.

v0-1 are below Kafka's floor (KIP-896). Consumers send it after a leader change, to
detect a truncated log (KIP-320).
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, STRING, Api, array, f, message

CONSUMER_REPLICA_ID = -2  # what a consumer (not a follower) sends


@message
class OffsetForLeaderPartition:
    partition: int = f(INT32)
    current_leader_epoch: int = f(INT32, default=-1)
    leader_epoch: int = f(INT32)


@message
class OffsetForLeaderTopic:
    topic: str = f(STRING)
    partitions: list[OffsetForLeaderPartition] = f(array(OffsetForLeaderPartition))


@message
class OffsetForLeaderEpochRequest:
    replica_id: int = f(INT32, since=3, default=CONSUMER_REPLICA_ID)
    topics: list[OffsetForLeaderTopic] = f(array(OffsetForLeaderTopic))


@message
class EpochEndOffset:
    error_code: int = f(INT16)
    partition: int = f(INT32)
    leader_epoch: int = f(INT32, default=-1)
    end_offset: int = f(INT64, default=-1)


@message
class OffsetForLeaderTopicResult:
    topic: str = f(STRING)
    partitions: list[EpochEndOffset] = f(array(EpochEndOffset))


@message
class OffsetForLeaderEpochResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[OffsetForLeaderTopicResult] = f(array(OffsetForLeaderTopicResult))


API = Api(
    23,
    "OffsetForLeaderEpoch",
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    2,
    3,
)
