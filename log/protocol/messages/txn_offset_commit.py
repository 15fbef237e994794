"""TxnOffsetCommit (key 28), v0-2; flexible versions (3+) and group membership checks (3+,
KIP-447) are not served.
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


API = Api(28, "TxnOffsetCommit", TxnOffsetCommitRequest, TxnOffsetCommitResponse, 0, 2)
