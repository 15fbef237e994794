"""Fetch (key 1), v4-11; flexible versions (12+) and topic ids (13+) are not served.

Fetch sessions (v7+, KIP-227) are declined: every response carries session id 0, so
clients send full fetch requests. Skipped: preferred read replicas (always -1).
"""

from __future__ import annotations

from ..schema import INT8, INT16, INT32, INT64, RECORDS, STRING, Api, array, f, message

READ_UNCOMMITTED = 0
READ_COMMITTED = 1


@message
class FetchPartition:
    partition: int = f(INT32)
    current_leader_epoch: int = f(INT32, since=9, default=-1)
    fetch_offset: int = f(INT64)
    log_start_offset: int = f(INT64, since=5, default=-1)
    partition_max_bytes: int = f(INT32)


@message
class FetchTopic:
    topic: str = f(STRING)
    partitions: list[FetchPartition] = f(array(FetchPartition))


@message
class ForgottenTopic:
    topic: str = f(STRING)
    partitions: list[int] = f(array(INT32))


@message
class FetchRequest:
    replica_id: int = f(INT32, default=-1)
    max_wait_ms: int = f(INT32)
    min_bytes: int = f(INT32)
    max_bytes: int = f(INT32, default=0x7FFFFFFF)
    isolation_level: int = f(INT8)
    session_id: int = f(INT32, since=7)
    session_epoch: int = f(INT32, since=7, default=-1)
    topics: list[FetchTopic] = f(array(FetchTopic))
    forgotten_topics_data: list[ForgottenTopic] = f(array(ForgottenTopic), since=7)
    rack_id: str = f(STRING, since=11)


@message
class AbortedTransaction:
    producer_id: int = f(INT64)
    first_offset: int = f(INT64)


@message
class FetchPartitionData:
    partition_index: int = f(INT32)
    error_code: int = f(INT16)
    high_watermark: int = f(INT64, default=-1)
    last_stable_offset: int = f(INT64, default=-1)
    log_start_offset: int = f(INT64, since=5, default=-1)
    aborted_transactions: list[AbortedTransaction] | None = f(
        array(AbortedTransaction, nullable=True)
    )
    preferred_read_replica: int = f(INT32, since=11, default=-1)
    records: bytes | memoryview | None = f(RECORDS)


@message
class FetchTopicResponse:
    topic: str = f(STRING)
    partitions: list[FetchPartitionData] = f(array(FetchPartitionData))


@message
class FetchResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16, since=7)
    session_id: int = f(INT32, since=7)
    responses: list[FetchTopicResponse] = f(array(FetchTopicResponse))


API = Api(1, "Fetch", FetchRequest, FetchResponse, 4, 11)
