"""AlterConfigs (key 33), v0-1: replace a topic's settings with the ones given.

Settings not named go back to their defaults, as in Kafka. Replication-only settings are
accepted and dropped. Broker settings cannot be changed at run time.
"""

from __future__ import annotations

import asyncio
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
    response = AlterConfigsResourceResponse(
        error_code=ErrorCode.NONE,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )
    if resource.resource_type != TOPIC_RESOURCE_TYPE:
        response.error_code = ErrorCode.INVALID_REQUEST
        response.error_message = "only topic configs can be changed at run time"
        return response
    settings = {
        entry.name: entry.value
        for entry in resource.configs
        if entry.value is not None and entry.name not in NO_EFFECT_CONFIGS
    }
    try:
        await apply_topic_settings(broker, resource.resource_name, settings, validate_only)
    except LogError as error:
        response.error_code = error.kafka_error_code
        response.error_message = str(error)
    return response


async def apply_topic_settings(
    broker: Broker, topic: str, settings: dict[str, str], validate_only: bool
) -> None:
    """Make ``settings`` the topic's whole set of overrides (or only check them)."""
    broker.log.topic(topic)  # raises if the topic is unknown
    if validate_only:
        broker.log.default_config.with_changes(settings)
        return
    await asyncio.to_thread(broker.log.alter_config, topic, settings, replace=True)
