"""AddPartitionsToTxn (key 24), v0-2: add partitions to a producer's transaction before it
writes to them (flexible v3 and the brokers' batched v4+ are not served).

A partition that does not exist is answered UNKNOWN_TOPIC_OR_PARTITION (an internal one
INVALID_TOPIC_EXCEPTION) and the others OPERATION_NOT_ATTEMPTED: nothing is added, as in
Kafka. A fenced producer is answered PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.add_partitions_to_txn import (
    AddPartitionsToTxnPartitionResult,
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopicResult,
)
from ..transactions.errors import TransactionPartitionsError, response_code

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

PRODUCER_FENCED_SINCE = 2


async def handle(
    broker: Broker, context: RequestContext, request: AddPartitionsToTxnRequest
) -> AddPartitionsToTxnResponse:
    partitions = [(topic.name, p) for topic in request.topics for p in topic.partitions]
    codes: dict[tuple[str, int], int] = {}
    default: int
    try:
        await broker.transactions.add_partitions(
            request.transactional_id, request.producer_id, request.producer_epoch, partitions
        )
    except TransactionPartitionsError as error:
        codes = {**error.errors}
        default = ErrorCode.OPERATION_NOT_ATTEMPTED
    except LogError as error:
        default = response_code(error, producer_fenced=context.version >= PRODUCER_FENCED_SINCE)
    else:
        default = ErrorCode.NONE
    by_topic: dict[str, list[AddPartitionsToTxnPartitionResult]] = defaultdict(list)
    for topic, partition in partitions:
        by_topic[topic].append(
            AddPartitionsToTxnPartitionResult(
                partition_index=partition,
                partition_error_code=codes.get((topic, partition), default),
            )
        )
    return AddPartitionsToTxnResponse(
        results=[
            AddPartitionsToTxnTopicResult(name=name, results_by_partition=results)
            for name, results in by_topic.items()
        ]
    )
