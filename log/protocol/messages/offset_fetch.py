"""OffsetFetch (key 9), v1-5; flexible versions (6+) and batched groups (8+) are not served.

v0 (offsets in ZooKeeper) is below Kafka's floor (KIP-896). Skipped: require_stable (7+).
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, NULLABLE_STRING, STRING, Api, array, f, message


@message
class OffsetFetchRequestTopic:
    name: str = f(STRING)
    partition_indexes: list[int] = f(array(INT32))


@message
class OffsetFetchRequest:
    group_id: str = f(STRING)
    # null (v2+) asks for every partition the group has committed.
    topics: list[OffsetFetchRequestTopic] | None = f(array(OffsetFetchRequestTopic, nullable=True))


@message
class OffsetFetchResponsePartition:
    partition_index: int = f(INT32)
    committed_offset: int = f(INT64, default=-1)  # -1: nothing committed
    committed_leader_epoch: int = f(INT32, since=5, default=-1)
    metadata: str | None = f(NULLABLE_STRING)
    error_code: int = f(INT16)


@message
class OffsetFetchResponseTopic:
    name: str = f(STRING)
    partitions: list[OffsetFetchResponsePartition] = f(array(OffsetFetchResponsePartition))


@message
class OffsetFetchResponse:
    throttle_time_ms: int = f(INT32, since=3)
    topics: list[OffsetFetchResponseTopic] = f(array(OffsetFetchResponseTopic))
    error_code: int = f(INT16, since=2)  # for the whole group


API = Api(9, "OffsetFetch", OffsetFetchRequest, OffsetFetchResponse, 1, 5)
