"""AlterConfigs (key 33), v0-1; flexible versions (2+) are not served.

A request replaces a resource's whole dynamic config; IncrementalAlterConfigs edits it.
"""

from __future__ import annotations

from ..schema import BOOL, INT8, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class AlterableConfig:
    name: str = f(STRING)
    value: str | None = f(NULLABLE_STRING)


@message
class AlterConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[AlterableConfig] = f(array(AlterableConfig))


@message
class AlterConfigsRequest:
    resources: list[AlterConfigsResource] = f(array(AlterConfigsResource))
    validate_only: bool = f(BOOL)


@message
class AlterConfigsResourceResponse:
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING)
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)


@message
class AlterConfigsResponse:
    throttle_time_ms: int = f(INT32)
    responses: list[AlterConfigsResourceResponse] = f(array(AlterConfigsResourceResponse))


API = Api(33, "AlterConfigs", AlterConfigsRequest, AlterConfigsResponse, 0, 1)
