"""IncrementalAlterConfigs (key 44), v0-1 (v1 flexible): set, delete, append to or subtract
from single topic settings, leaving the others as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import NO_EFFECT_CONFIGS
from ..errors import InvalidConfigError, LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.describe_configs import TOPIC_RESOURCE_TYPE
from ..protocol.messages.incremental_alter_configs import (
    APPEND_OPERATION,
    DELETE_OPERATION,
    SET_OPERATION,
    SUBTRACT_OPERATION,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
    IncrementalAlterConfigsResourceResponse,
    IncrementalAlterConfigsResponse,
)
from .alter_configs import apply_topic_settings

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: IncrementalAlterConfigsRequest
) -> IncrementalAlterConfigsResponse:
    responses = []
    for resource in request.resources:
        responses.append(await _alter(broker, resource, request.validate_only))
    return IncrementalAlterConfigsResponse(responses=responses)


async def _alter(
    broker: Broker, resource: IncrementalAlterConfigsResource, validate_only: bool
) -> IncrementalAlterConfigsResourceResponse:
    response = IncrementalAlterConfigsResourceResponse(
        error_code=ErrorCode.NONE,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )
    if resource.resource_type != TOPIC_RESOURCE_TYPE:
        response.error_code = ErrorCode.INVALID_REQUEST
        response.error_message = "only topic configs can be changed at run time"
        return response
    try:
        info = broker.log.topic(resource.resource_name)
        settings = dict(info.overrides)
        current = info.config.to_kafka()
        for change in resource.configs:
            if change.name not in NO_EFFECT_CONFIGS:
                _apply(settings, current, change)
        await apply_topic_settings(broker, resource.resource_name, settings, validate_only)
    except LogError as error:
        response.error_code = error.kafka_error_code
        response.error_message = str(error)
    return response


def _apply(
    settings: dict[str, str], current: dict[str, str], change: IncrementalAlterableConfig
) -> None:
    name, value = change.name, change.value
    if change.config_operation == DELETE_OPERATION:
        settings.pop(name, None)
        return
    if value is None:
        raise InvalidConfigError(f"{name}: a value is required")
    if change.config_operation == SET_OPERATION:
        settings[name] = value
        return
    items = [item for item in settings.get(name, current.get(name, "")).split(",") if item]
    if change.config_operation == APPEND_OPERATION:
        items += [item for item in value.split(",") if item not in items]
    elif change.config_operation == SUBTRACT_OPERATION:
        items = [item for item in items if item not in value.split(",")]
    else:
        raise InvalidConfigError(f"{name}: unknown operation {change.config_operation}")
    settings[name] = ",".join(items)
