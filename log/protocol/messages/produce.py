"""Produce (key 0), v3-8: record batches (magic 2) only; flexible versions (9+) not served."""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, NULLABLE_STRING, RECORDS, STRING, Api, array, f, message


@message
class ProducePartitionData:
    index: int = f(INT32)
    records: bytes | None = f(RECORDS)


@message
class ProduceTopicData:
    name: str = f(STRING)
    partitions: list[ProducePartitionData] = f(array(ProducePartitionData))


@message
class ProduceRequest:
    transactional_id: str | None = f(NULLABLE_STRING)
    acks: int = f(INT16)
    timeout_ms: int = f(INT32)
    topics: list[ProduceTopicData] = f(array(ProduceTopicData))


@message
class BatchIndexAndErrorMessage:
    batch_index: int = f(INT32)
    batch_index_error_message: str | None = f(NULLABLE_STRING)


@message
class ProducePartitionResponse:
    index: int = f(INT32)
    error_code: int = f(INT16)
    base_offset: int = f(INT64, default=-1)
    log_append_time_ms: int = f(INT64, default=-1)
    log_start_offset: int = f(INT64, since=5, default=-1)
    record_errors: list[BatchIndexAndErrorMessage] = f(array(BatchIndexAndErrorMessage), since=8)
    error_message: str | None = f(NULLABLE_STRING, since=8)


@message
class ProduceTopicResponse:
    name: str = f(STRING)
    partitions: list[ProducePartitionResponse] = f(array(ProducePartitionResponse))


@message
class ProduceResponse:
    responses: list[ProduceTopicResponse] = f(array(ProduceTopicResponse))
    throttle_time_ms: int = f(INT32)


API = Api(0, "Produce", ProduceRequest, ProduceResponse, 3, 8)
