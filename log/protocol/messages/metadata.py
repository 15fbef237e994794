"""Metadata (key 3), v0-8; flexible versions (9+) are not served.

Skipped: authorized operations are always -2147483648 ("not asked").
"""

from __future__ import annotations

from ..schema import BOOL, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class MetadataRequestTopic:
    name: str = f(STRING)


@message
class MetadataRequest:
    # null (v1+) asks for every topic; in v0 an empty list does.
    topics: list[MetadataRequestTopic] | None = f(array(MetadataRequestTopic, nullable=True))
    allow_auto_topic_creation: bool = f(BOOL, since=4, default=True)
    include_cluster_authorized_operations: bool = f(BOOL, since=8)
    include_topic_authorized_operations: bool = f(BOOL, since=8)


@message
class MetadataBroker:
    node_id: int = f(INT32)
    host: str = f(STRING)
    port: int = f(INT32)
    rack: str | None = f(NULLABLE_STRING, since=1)


@message
class MetadataPartition:
    error_code: int = f(INT16)
    partition_index: int = f(INT32)
    leader_id: int = f(INT32)
    leader_epoch: int = f(INT32, since=7, default=-1)
    replica_nodes: list[int] = f(array(INT32))
    isr_nodes: list[int] = f(array(INT32))
    offline_replicas: list[int] = f(array(INT32), since=5)


@message
class MetadataTopic:
    error_code: int = f(INT16)
    name: str = f(STRING)
    is_internal: bool = f(BOOL, since=1)
    partitions: list[MetadataPartition] = f(array(MetadataPartition))
    topic_authorized_operations: int = f(INT32, since=8, default=-(2**31))


@message
class MetadataResponse:
    throttle_time_ms: int = f(INT32, since=3)
    brokers: list[MetadataBroker] = f(array(MetadataBroker))
    cluster_id: str | None = f(NULLABLE_STRING, since=2)
    controller_id: int = f(INT32, since=1, default=-1)
    topics: list[MetadataTopic] = f(array(MetadataTopic))
    cluster_authorized_operations: int = f(INT32, since=8, default=-(2**31))


API = Api(3, "Metadata", MetadataRequest, MetadataResponse, 0, 8)
