"""CreateTopics (key 19), v2-4 (v0-1 are below Kafka 4's floor).

One node: a replication factor other than 1 (or -1, the default) is refused; explicit
replica assignments must name this node. Replication-only configs (``min.insync.replicas``
and the like) are accepted and dropped. ``validate_only`` checks without creating.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..broker import INTERNAL_TOPICS
from ..config import NO_EFFECT_CONFIGS
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.create_topics import (
    CreatableTopic,
    CreatableTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
)
from ..storage import check_topic_name

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: CreateTopicsRequest
) -> CreateTopicsResponse:
    results = []
    for topic in request.topics:
        results.append(await _create(broker, topic, request.validate_only))
    return CreateTopicsResponse(topics=results)


async def _create(
    broker: Broker, topic: CreatableTopic, validate_only: bool
) -> CreatableTopicResult:
    def failed(code: int, message: str) -> CreatableTopicResult:
        return CreatableTopicResult(name=topic.name, error_code=code, error_message=message)

    node_id = broker.config.node_id
    if topic.replication_factor not in (-1, 1):
        return failed(ErrorCode.INVALID_REPLICATION_FACTOR,
                      f"replication factor {topic.replication_factor}: this log has 1 node")
    if any(assignment.broker_ids != [node_id] for assignment in topic.assignments):
        return failed(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                      f"every partition must be assigned to node {node_id}, the only one")
    if topic.name in INTERNAL_TOPICS:
        return failed(ErrorCode.INVALID_REQUEST, f"{topic.name} is an internal topic")
    partitions = len(topic.assignments) or topic.num_partitions
    if partitions == -1:
        partitions = broker.config.default_partitions
    config = {
        entry.name: entry.value
        for entry in topic.configs
        if entry.value is not None and entry.name not in NO_EFFECT_CONFIGS
    }
    try:
        if validate_only:
            check_topic_name(topic.name)
            broker.log.default_config.with_changes(config)
            if broker.log.has_topic(topic.name):
                return failed(ErrorCode.TOPIC_ALREADY_EXISTS, f"{topic.name} already exists")
        else:
            await asyncio.to_thread(broker.log.create_topic, topic.name, partitions, config)
    except LogError as error:
        return failed(error.kafka_error_code, str(error))
    return CreatableTopicResult(name=topic.name, error_code=ErrorCode.NONE)
