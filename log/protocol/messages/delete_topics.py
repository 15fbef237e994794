"""DeleteTopics (key 20), v1-3; flexible versions (4+) and topic ids (6+) are not served.

v0 is below Kafka's floor (KIP-896).
"""

from __future__ import annotations

from ..schema import INT16, INT32, STRING, Api, array, f, message


@message
class DeleteTopicsRequest:
    topic_names: list[str] = f(array(STRING))
    timeout_ms: int = f(INT32)


@message
class DeletableTopicResult:
    name: str = f(STRING)
    error_code: int = f(INT16)


@message
class DeleteTopicsResponse:
    throttle_time_ms: int = f(INT32)
    responses: list[DeletableTopicResult] = f(array(DeletableTopicResult))


API = Api(20, "DeleteTopics", DeleteTopicsRequest, DeleteTopicsResponse, 1, 3)
