"""DescribeConfigs (key 32), v1-3 (v0 is below Kafka 4's floor).

Topics report every setting streamer applies, Kafka-named (``retention.ms``,
``retention.bytes``, ``cleanup.policy``, ``segment.bytes``, ``max.message.bytes``, ...),
with the source Kafka uses: set on the topic, or the default. The broker resource reports
the settings of this node that clients ask about. Synonyms are not listed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import TopicConfig
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.describe_configs import (
    BROKER_RESOURCE_TYPE,
    TOPIC_RESOURCE_TYPE,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    DescribeConfigsResourceResult,
    DescribeConfigsResponse,
    DescribeConfigsResult,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

# Kafka's ConfigSource and ConfigType values.
SOURCE_DYNAMIC_TOPIC = 1
SOURCE_STATIC_BROKER = 4
SOURCE_DEFAULT = 5
TYPE_BOOLEAN = 1
TYPE_STRING = 2
TYPE_INT = 3
TYPE_LONG = 5
TYPE_DOUBLE = 6
TYPE_LIST = 7
_TYPES = {"cleanup.policy": TYPE_LIST, "min.cleanable.dirty.ratio": TYPE_DOUBLE,
          "message.timestamp.type": TYPE_STRING, "max.message.bytes": TYPE_INT,
          "segment.bytes": TYPE_INT, "index.interval.bytes": TYPE_INT}


async def handle(
    broker: Broker, context: RequestContext, request: DescribeConfigsRequest
) -> DescribeConfigsResponse:
    return DescribeConfigsResponse(results=[_describe(broker, r) for r in request.resources])


def _describe(broker: Broker, resource: DescribeConfigsResource) -> DescribeConfigsResult:
    result = DescribeConfigsResult(
        error_code=ErrorCode.NONE,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )
    if resource.resource_type == TOPIC_RESOURCE_TYPE:
        try:
            info = broker.log.topic(resource.resource_name)
        except LogError as error:
            result.error_code = error.kafka_error_code
            result.error_message = str(error)
            return result
        entries = _topic_entries(info.config, set(info.overrides))
    elif resource.resource_type == BROKER_RESOURCE_TYPE:
        entries = _broker_entries(broker)
    else:
        result.error_code = ErrorCode.INVALID_REQUEST
        result.error_message = f"resource type {resource.resource_type} is not described"
        return result
    keys = resource.configuration_keys
    result.configs = [entry for entry in entries if keys is None or entry.name in keys]
    return result


def _topic_entries(
    config: TopicConfig, overridden: set[str]
) -> list[DescribeConfigsResourceResult]:
    return [
        DescribeConfigsResourceResult(
            name=name,
            value=value,
            config_source=SOURCE_DYNAMIC_TOPIC if name in overridden else SOURCE_DEFAULT,
            config_type=_TYPES.get(name, TYPE_LONG),
        )
        for name, value in config.to_kafka().items()
    ]


def _broker_entries(broker: Broker) -> list[DescribeConfigsResourceResult]:
    config = broker.config
    defaults = broker.log.default_config.to_kafka()
    settings = {
        "auto.create.topics.enable": (str(config.auto_create_topics).lower(), TYPE_BOOLEAN),
        "num.partitions": (str(config.default_partitions), TYPE_INT),
        "default.replication.factor": ("1", TYPE_INT),
        "log.retention.ms": (defaults["retention.ms"], TYPE_LONG),
        "log.retention.bytes": (defaults["retention.bytes"], TYPE_LONG),
        "log.segment.bytes": (defaults["segment.bytes"], TYPE_INT),
        "log.cleanup.policy": (defaults["cleanup.policy"], TYPE_LIST),
        "message.max.bytes": (defaults["max.message.bytes"], TYPE_INT),
    }
    return [
        DescribeConfigsResourceResult(
            name=name, value=value, read_only=True, config_source=SOURCE_STATIC_BROKER,
            config_type=kind,
        )
        for name, (value, kind) in settings.items()
    ]
