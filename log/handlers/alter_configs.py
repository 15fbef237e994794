"""AlterConfigs (key 33), v0-1: replace a topic's settings with the ones given.

Settings not named go back to their defaults, as in Kafka. Replication-only settings are
accepted and dropped. Broker settings cannot be changed at run time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import NO_EFFECT_CONFIGS
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.alter_configs import (
    AlterConfigsRequest,
    AlterConfigsResource,
    AlterConfigsResourceResponse,
    AlterConfigsResponse,
)
from ..protocol.messages.describe_configs import TOPIC_RESOURCE_TYPE
from ..storage import TopicInfo

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: AlterConfigsRequest
) -> AlterConfigsResponse:
    responses = []
    for resource in request.resources:
        responses.append(await _alter(broker, resource, request.validate_only))
    return AlterConfigsResponse(responses=responses)


async def _alter(
    broker: Broker, resource: AlterConfigsResource, validate_only: bool
) -> AlterConfigsResourceResponse:
    def settings(info: TopicInfo) -> dict[str, str]:
        return {
            entry.name: entry.value
            for entry in resource.configs
            if entry.value is not None and entry.name not in NO_EFFECT_CONFIGS
        }

    error_code, message = await alter_topic(
        broker, resource.resource_type, resource.resource_name, settings, validate_only
    )
    return AlterConfigsResourceResponse(
        error_code=error_code, error_message=message,
        resource_type=resource.resource_type, resource_name=resource.resource_name,
    )


async def alter_topic(
    broker: Broker,
    resource_type: int,
    topic: str,
    settings_for: Callable[[TopicInfo], dict[str, str]],
    validate_only: bool,
) -> tuple[int, str | None]:
    """Make ``settings_for(topic info)`` the topic's whole set of overrides, or only check
    them; the error code and message for the resource's response."""
    if resource_type != TOPIC_RESOURCE_TYPE:
        return ErrorCode.INVALID_REQUEST, "only topic configs can be changed at run time"
    try:
        settings = settings_for(broker.log.topic(topic))  # raises if the topic is unknown
        if validate_only:
            broker.log.default_config.with_changes(settings)
        else:
            await asyncio.to_thread(broker.log.alter_config, topic, settings, replace=True)
    except LogError as error:
        return error.kafka_error_code, str(error)
    return ErrorCode.NONE, None
