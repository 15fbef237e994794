"""DeleteTopics (key 20), v1-3 (v0 is below Kafka 4's floor). Internal topics are refused."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..broker import INTERNAL_TOPICS
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.delete_topics import (
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: DeleteTopicsRequest
) -> DeleteTopicsResponse:
    results = []
    for name in request.topic_names:
        results.append(DeletableTopicResult(name=name, error_code=await _delete(broker, name)))
    return DeleteTopicsResponse(responses=results)


async def _delete(broker: Broker, name: str) -> int:
    if name in INTERNAL_TOPICS:
        return ErrorCode.INVALID_REQUEST
    try:
        await asyncio.to_thread(broker.log.delete_topic, name)
    except LogError as error:
        return error.kafka_error_code
    broker.notify_append(name, -1)  # nothing waits on it; parked fetches see the error next
    return ErrorCode.NONE
