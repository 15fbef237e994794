"""Produce (key 0), v3-8, acks 0, 1 and all (-1).

Batches are appended in request order on the event loop (idempotent producers pipeline up
to five requests per partition and rely on that order); ``acks=all`` then waits for the
fsync that makes them durable, shared with concurrent requests. ``acks`` 0 and 1 answer
after the append and start the fsync in the background. A topic that does not exist is
auto-created when the broker allows it. A transactional producer's batch is appended only to
a partition of its open transaction (checked with the transaction coordinator, as KIP-890's
verification does), so a write delivered after its transaction ended is refused.

Skipped: ``timeout_ms`` (one replica: nothing to wait for but the local fsync).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..broker import INTERNAL_TOPICS
from ..errors import LogError
from ..partition import PartitionLog
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.produce import (
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

ACKS_ALL = -1


async def handle(
    broker: Broker, context: RequestContext, request: ProduceRequest
) -> ProduceResponse | None:
    if request.acks not in (0, 1, ACKS_ALL):
        return _all_failed(request, ErrorCode.INVALID_REQUIRED_ACKS)
    responses: list[ProduceTopicResponse] = []
    durable: list[tuple[PartitionLog, int, ProducePartitionResponse]] = []
    for topic in request.topics:
        results = []
        for data in topic.partitions:
            result, written, up_to = _append(
                broker, topic.name, data.index, data.records, request.transactional_id
            )
            results.append(result)
            if written is not None:
                durable.append((written, up_to, result))
        responses.append(ProduceTopicResponse(name=topic.name, partitions=results))
    if request.acks == ACKS_ALL:
        await _wait_durable(broker, durable)
    else:
        for partition, _, _ in durable:
            broker.flush_soon(partition)
    if request.acks == 0:
        return None
    return ProduceResponse(responses=responses)


def _append(
    broker: Broker, topic: str, index: int, records: bytes | None, transactional_id: str | None
) -> tuple[ProducePartitionResponse, PartitionLog | None, int]:
    """The partition's response, and the partition and offset an fsync must reach."""
    if not records:
        return ProducePartitionResponse(index=index, error_code=ErrorCode.CORRUPT_MESSAGE), None, 0
    if topic in INTERNAL_TOPICS:  # written by the broker alone, in its own format
        return ProducePartitionResponse(
            index=index, error_code=ErrorCode.INVALID_TOPIC_EXCEPTION,
            error_message=f"{topic} is an internal topic",
        ), None, 0
    if transactional_id is not None:  # only a transaction's batch goes to its partitions
        refused = broker.transactions.verify_produce(transactional_id, topic, index, records)
        if refused != ErrorCode.NONE:
            return ProducePartitionResponse(
                index=index, error_code=refused,
                error_message=f"{topic}/{index} is not in the open transaction of "
                              f"{transactional_id!r}",
            ), None, 0  # fmt: skip
    try:
        partition = broker.partition(topic, index, create=True)
        appended = partition.append(records, wait_durable=False)
    except LogError as error:
        response = ProducePartitionResponse(
            index=index, error_code=error.kafka_error_code, error_message=str(error)
        )
        return response, None, 0
    broker.notify_append(topic, index)
    response = ProducePartitionResponse(
        index=index,
        error_code=ErrorCode.NONE,
        base_offset=appended.base_offset,
        log_append_time_ms=appended.log_append_time_ms,
        log_start_offset=appended.log_start_offset,
    )
    # A duplicate's fsync must still cover the original's offsets.
    return response, partition, appended.last_offset + 1


async def _wait_durable(
    broker: Broker, durable: list[tuple[PartitionLog, int, ProducePartitionResponse]]
) -> None:
    async def one(partition: PartitionLog, up_to: int, response: ProducePartitionResponse) -> None:
        try:
            await broker.wait_durable(partition, up_to)
        except LogError as error:
            # Written but not durable: the client must not take it as acknowledged.
            response.error_code = error.kafka_error_code
            response.error_message = str(error)
            response.base_offset = -1

    await asyncio.gather(*(one(*item) for item in durable))


def _all_failed(request: ProduceRequest, error_code: int) -> ProduceResponse:
    return ProduceResponse(
        responses=[
            ProduceTopicResponse(
                name=topic.name,
                partitions=[
                    ProducePartitionResponse(index=data.index, error_code=error_code)
                    for data in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )
