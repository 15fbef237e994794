"""TxnOffsetCommit (key 28), v0-3, flexible from v3; v4+ (KIP-890) are not served.

v3 (KIP-447) names the consumer-group member the producer commits for, so that a member
fenced by a rebalance cannot commit the offsets of partitions it lost.
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, NULLABLE_STRING, STRING, Api, array, f, message


@message
class TxnOffsetCommitRequestPartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64)
    committed_leader_epoch: int = f(INT32, since=2, default=-1)
    committed_metadata: str | None = f(NULLABLE_STRING)


@message
class TxnOffsetCommitRequestTopic:
    name: str = f(STRING)
    partitions: list[TxnOffsetCommitRequestPartition] = f(array(TxnOffsetCommitRequestPartition))


@message
class TxnOffsetCommitRequest:
    transactional_id: str = f(STRING)
    group_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    generation_id: int = f(INT32, since=3, default=-1)
    member_id: str = f(STRING, since=3)
    group_instance_id: str | None = f(NULLABLE_STRING, since=3)
    topics: list[TxnOffsetCommitRequestTopic] = f(array(TxnOffsetCommitRequestTopic))


@message
class TxnOffsetCommitResponsePartition:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@message
class TxnOffsetCommitResponseTopic:
    name: str = f(STRING)
    partitions: list[TxnOffsetCommitResponsePartition] = f(array(TxnOffsetCommitResponsePartition))


@message
class TxnOffsetCommitResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[TxnOffsetCommitResponseTopic] = f(array(TxnOffsetCommitResponseTopic))


API = Api(
    28, "TxnOffsetCommit", TxnOffsetCommitRequest, TxnOffsetCommitResponse, 0, 3, flexible_from=3
)
