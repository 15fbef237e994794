"""CreatePartitions (key 37), v0-1: grow a topic to a new partition count."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..broker import INTERNAL_TOPICS
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.create_partitions import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreatePartitionsTopic,
    CreatePartitionsTopicResult,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: CreatePartitionsRequest
) -> CreatePartitionsResponse:
    results = []
    for topic in request.topics:
        results.append(await _grow(broker, topic, request.validate_only))
    return CreatePartitionsResponse(results=results)


async def _grow(
    broker: Broker, topic: CreatePartitionsTopic, validate_only: bool
) -> CreatePartitionsTopicResult:
    def result(code: int, message: str | None = None) -> CreatePartitionsTopicResult:
        return CreatePartitionsTopicResult(name=topic.name, error_code=code, error_message=message)

    node_id = broker.config.node_id
    if topic.name in INTERNAL_TOPICS:
        return result(ErrorCode.INVALID_REQUEST, f"{topic.name} is an internal topic")
    if topic.assignments and any(a.broker_ids != [node_id] for a in topic.assignments):
        return result(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                      f"new partitions must be assigned to node {node_id}, the only one")
    try:
        current = broker.log.topic(topic.name).partitions
        if validate_only:
            if topic.count <= current:
                return result(ErrorCode.INVALID_PARTITIONS,
                              f"{topic.name} has {current} partitions; asked for {topic.count}")
        else:
            await asyncio.to_thread(broker.log.create_partitions, topic.name, topic.count)
    except LogError as error:
        return result(error.kafka_error_code, str(error))
    return result(ErrorCode.NONE)
