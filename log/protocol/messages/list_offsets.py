"""ListOffsets (key 2), v1-5; flexible versions (6+) are not served.

Timestamps -1 (latest) and -2 (earliest) are special, as in Kafka; -3 (max timestamp,
v7+) is not served.
"""

from __future__ import annotations

from ..schema import INT8, INT16, INT32, INT64, STRING, Api, array, f, message

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


@message
class ListOffsetsPartition:
    partition_index: int = f(INT32)
    current_leader_epoch: int = f(INT32, since=4, default=-1)
    timestamp: int = f(INT64)


@message
class ListOffsetsTopic:
    name: str = f(STRING)
    partitions: list[ListOffsetsPartition] = f(array(ListOffsetsPartition))


@message
class ListOffsetsRequest:
    replica_id: int = f(INT32, default=-1)
    isolation_level: int = f(INT8, since=2)
    topics: list[ListOffsetsTopic] = f(array(ListOffsetsTopic))


@message
class ListOffsetsPartitionResponse:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    timestamp: int = f(INT64, default=-1)
    offset: int = f(INT64, default=-1)
    leader_epoch: int = f(INT32, since=4, default=-1)


@message
class ListOffsetsTopicResponse:
    name: str = f(STRING)
    partitions: list[ListOffsetsPartitionResponse] = f(array(ListOffsetsPartitionResponse))


@message
class ListOffsetsResponse:
    throttle_time_ms: int = f(INT32, since=2)
    topics: list[ListOffsetsTopicResponse] = f(array(ListOffsetsTopicResponse))


API = Api(2, "ListOffsets", ListOffsetsRequest, ListOffsetsResponse, 1, 5)
