"""DescribeConfigs (key 32), v1-3; flexible versions (4+) are not served.

v0 is below Kafka's floor (KIP-896).
"""

from __future__ import annotations

from ..schema import BOOL, INT8, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message

TOPIC_RESOURCE_TYPE = 2
BROKER_RESOURCE_TYPE = 4


@message
class DescribeConfigsResource:
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    # null asks for every config of the resource.
    configuration_keys: list[str] | None = f(array(STRING, nullable=True))


@message
class DescribeConfigsRequest:
    resources: list[DescribeConfigsResource] = f(array(DescribeConfigsResource))
    include_synonyms: bool = f(BOOL)
    include_documentation: bool = f(BOOL, since=3)


@message
class DescribeConfigsSynonym:
    name: str = f(STRING)
    value: str | None = f(NULLABLE_STRING)
    source: int = f(INT8)


@message
class DescribeConfigsResourceResult:
    name: str = f(STRING)
    value: str | None = f(NULLABLE_STRING)  # null when sensitive
    read_only: bool = f(BOOL)
    config_source: int = f(INT8, default=-1)
    is_sensitive: bool = f(BOOL)
    synonyms: list[DescribeConfigsSynonym] = f(array(DescribeConfigsSynonym))
    config_type: int = f(INT8, since=3)
    documentation: str | None = f(NULLABLE_STRING, since=3)


@message
class DescribeConfigsResult:
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING)
    resource_type: int = f(INT8)
    resource_name: str = f(STRING)
    configs: list[DescribeConfigsResourceResult] = f(array(DescribeConfigsResourceResult))


@message
class DescribeConfigsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[DescribeConfigsResult] = f(array(DescribeConfigsResult))


API = Api(32, "DescribeConfigs", DescribeConfigsRequest, DescribeConfigsResponse, 1, 3)
