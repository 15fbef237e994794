"""IncrementalAlterConfigs (key 44), v0-1; v1 is flexible.

Each config names its own operation; AlterConfigs, by contrast, replaces the whole set.
"""

from __future__ import annotations

from ..schema import BOOL, INT8, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message

SET_OPERATION = 0
DELETE_OPERATION = 1
APPEND_OPERATION = 2  # to a list-valued config
SUBTRACT_OPERATION = 3  # from a list-valued config


@message
class IncrementalAlterableConfig:
    name: str = f(STRING)
    config_operation: int = f(INT8)
    value: str | None = f(NULLABLE_STRING)


@message
class IncrementalAlterConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[IncrementalAlterableConfig] = f(array(IncrementalAlterableConfig))


@message
class IncrementalAlterConfigsRequest:
    resources: list[IncrementalAlterConfigsResource] = f(array(IncrementalAlterConfigsResource))
    validate_only: bool = f(BOOL)


@message
class IncrementalAlterConfigsResourceResponse:
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING)
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)


@message
class IncrementalAlterConfigsResponse:
    throttle_time_ms: int = f(INT32)
    responses: list[IncrementalAlterConfigsResourceResponse] = f(
        array(IncrementalAlterConfigsResourceResponse)
    )


API = Api(
    44,
    "IncrementalAlterConfigs",
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
    0,
    1,
    flexible_from=1,
)
