"""OffsetCommit (key 8), v2-7; flexible versions (8+) and topic ids (10+) are not served.

v0-1 are below Kafka's floor (KIP-896); commit timestamps (v1 only) are therefore not served.
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, NULLABLE_STRING, STRING, Api, array, f, message


@message
class OffsetCommitRequestPartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64)
    committed_leader_epoch: int = f(INT32, since=6, default=-1)
    committed_metadata: str | None = f(NULLABLE_STRING)


@message
class OffsetCommitRequestTopic:
    name: str = f(STRING)
    partitions: list[OffsetCommitRequestPartition] = f(array(OffsetCommitRequestPartition))


@message
class OffsetCommitRequest:
    group_id: str = f(STRING)
    # -1 with member id "": a simple (non-member) commit, as by a standalone consumer.
    generation_id_or_member_epoch: int = f(INT32, default=-1)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING, since=7)
    retention_time_ms: int = f(INT64, until=4, default=-1)
    topics: list[OffsetCommitRequestTopic] = f(array(OffsetCommitRequestTopic))


@message
class OffsetCommitResponsePartition:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)


@message
class OffsetCommitResponseTopic:
    name: str = f(STRING)
    partitions: list[OffsetCommitResponsePartition] = f(array(OffsetCommitResponsePartition))


@message
class OffsetCommitResponse:
    throttle_time_ms: int = f(INT32, since=3)
    topics: list[OffsetCommitResponseTopic] = f(array(OffsetCommitResponseTopic))


API = Api(8, "OffsetCommit", OffsetCommitRequest, OffsetCommitResponse, 2, 7)
