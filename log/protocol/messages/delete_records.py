"""DeleteRecords (key 21), v0-1; flexible versions (2+) are not served.

As in Kafka, nothing is erased in place: the partition's log start offset moves up to the
offset asked for (-1: the high watermark).
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, STRING, Api, array, f, message


@message
class DeleteRecordsPartition:
    partition_index: int = f(INT32)
    offset: int = f(INT64)


@message
class DeleteRecordsTopic:
    name: str = f(STRING)
    partitions: list[DeleteRecordsPartition] = f(array(DeleteRecordsPartition))


@message
class DeleteRecordsRequest:
    topics: list[DeleteRecordsTopic] = f(array(DeleteRecordsTopic))
    timeout_ms: int = f(INT32)


@message
class DeleteRecordsPartitionResult:
    partition_index: int = f(INT32)
    low_watermark: int = f(INT64, default=-1)  # the new log start offset
    error_code: int = f(INT16)


@message
class DeleteRecordsTopicResult:
    name: str = f(STRING)
    partitions: list[DeleteRecordsPartitionResult] = f(array(DeleteRecordsPartitionResult))


@message
class DeleteRecordsResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[DeleteRecordsTopicResult] = f(array(DeleteRecordsTopicResult))


API = Api(21, "DeleteRecords", DeleteRecordsRequest, DeleteRecordsResponse, 0, 1)
