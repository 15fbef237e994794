"""IncrementalAlterConfigs (key 44), v0-1 (v1 flexible): set, delete, append to or subtract
from single topic settings, leaving the others as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import NO_EFFECT_CONFIGS
from ..errors import InvalidConfigError
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
from ..storage import TopicInfo
from .alter_configs import alter_topic

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
    def settings(info: TopicInfo) -> dict[str, str]:
        changed = dict(info.overrides)
        current = info.config.to_kafka()
        for change in resource.configs:
            if change.name not in NO_EFFECT_CONFIGS:
                _apply(changed, current, change)
        return changed

    error_code, message = await alter_topic(
        broker, resource.resource_type, resource.resource_name, settings, validate_only
    )
    return IncrementalAlterConfigsResourceResponse(
        error_code=error_code, error_message=message,
        resource_type=resource.resource_type, resource_name=resource.resource_name,
    )


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
