"""Metadata (key 3), v0-8: this one node as broker and controller, and the topics asked for.

Topics named in a request are auto-created when the request allows it (v4+) and the broker
does (``auto.create.topics.enable``). The node is advertised at the address the client
reached it at, unless the broker was told an advertised address, so whatever Metadata
names is reachable by the client that asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..broker import INTERNAL_TOPICS
from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.metadata import (
    MetadataBroker,
    MetadataPartition,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: MetadataRequest
) -> MetadataResponse:
    node_id = broker.config.node_id
    if request.topics is None or (context.version == 0 and not request.topics):
        names = broker.log.topic_names()
    else:
        names = list(dict.fromkeys(topic.name for topic in request.topics))
    allow_create = request.allow_auto_topic_creation and request.topics is not None
    return MetadataResponse(
        brokers=[advertised_broker(broker, context)],
        cluster_id=broker.cluster.cluster_id,
        controller_id=node_id,
        topics=[_topic(broker, name, allow_create) for name in names],
    )


def advertised_broker(broker: Broker, context: RequestContext) -> MetadataBroker:
    config = broker.config
    return MetadataBroker(
        node_id=config.node_id,
        host=config.advertised_host or context.local_host,
        port=config.advertised_port or broker.port,
    )


def _topic(broker: Broker, name: str, allow_create: bool) -> MetadataTopic:
    try:
        exists = broker.auto_create(name) if allow_create else broker.log.has_topic(name)
    except LogError as error:
        return MetadataTopic(error_code=error.kafka_error_code, name=name)
    if not exists:
        return MetadataTopic(error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name=name)
    node_id = broker.config.node_id
    partitions = [
        MetadataPartition(
            error_code=ErrorCode.NONE,
            partition_index=index,
            leader_id=node_id,
            leader_epoch=broker.log.partition(name, index).leader_epoch,
            replica_nodes=[node_id],
            isr_nodes=[node_id],
        )
        for index in range(broker.partition_count(name))
    ]
    return MetadataTopic(
        error_code=ErrorCode.NONE,
        name=name,
        is_internal=name in INTERNAL_TOPICS,
        partitions=partitions,
    )
