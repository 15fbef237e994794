"""CreateTopics (key 19), v2-4; flexible versions (5+) and topic ids (7+) are not served.

v0-1 are below Kafka's floor (KIP-896).
"""

from __future__ import annotations

from ..schema import BOOL, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class CreatableReplicaAssignment:
    partition_index: int = f(INT32)
    broker_ids: list[int] = f(array(INT32))


@message
class CreatableTopicConfig:
    name: str = f(STRING)
    value: str | None = f(NULLABLE_STRING)


@message
class CreatableTopic:
    name: str = f(STRING)
    num_partitions: int = f(INT32, default=-1)  # -1: the broker's default
    replication_factor: int = f(INT16, default=-1)  # -1: the broker's default
    assignments: list[CreatableReplicaAssignment] = f(array(CreatableReplicaAssignment))
    configs: list[CreatableTopicConfig] = f(array(CreatableTopicConfig))


@message
class CreateTopicsRequest:
    topics: list[CreatableTopic] = f(array(CreatableTopic))
    timeout_ms: int = f(INT32, default=60_000)
    validate_only: bool = f(BOOL)


@message
class CreatableTopicResult:
    name: str = f(STRING)
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING)


@message
class CreateTopicsResponse:
    throttle_time_ms: int = f(INT32)
    topics: list[CreatableTopicResult] = f(array(CreatableTopicResult))


API = Api(19, "CreateTopics", CreateTopicsRequest, CreateTopicsResponse, 2, 4)
