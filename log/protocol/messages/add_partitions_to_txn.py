"""AddPartitionsToTxn (key 24), v0-2; flexible versions (3+) and batches of transactions
(v4+, sent between brokers) are not served.

Kafka renamed the v0-3 fields ``V3AndBelow...``; streamer keeps their original names.
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, STRING, Api, array, f, message


@message
class AddPartitionsToTxnTopic:
    name: str = f(STRING)
    partitions: list[int] = f(array(INT32))


@message
class AddPartitionsToTxnRequest:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    topics: list[AddPartitionsToTxnTopic] = f(array(AddPartitionsToTxnTopic))


@message
class AddPartitionsToTxnPartitionResult:
    partition_index: int = f(INT32)
    partition_error_code: int = f(INT16)


@message
class AddPartitionsToTxnTopicResult:
    name: str = f(STRING)
    results_by_partition: list[AddPartitionsToTxnPartitionResult] = f(
        array(AddPartitionsToTxnPartitionResult)
    )


@message
class AddPartitionsToTxnResponse:
    throttle_time_ms: int = f(INT32)
    results: list[AddPartitionsToTxnTopicResult] = f(array(AddPartitionsToTxnTopicResult))


API = Api(24, "AddPartitionsToTxn", AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, 0, 2)
