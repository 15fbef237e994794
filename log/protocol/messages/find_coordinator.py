"""FindCoordinator (key 10), v0-2; flexible versions (3+) and batched keys (4+) are not served.

streamer is a single broker, so it coordinates every group and every transactional id.
"""

from __future__ import annotations

from ..schema import INT8, INT16, INT32, NULLABLE_STRING, STRING, Api, f, message

GROUP_KEY_TYPE = 0
TRANSACTION_KEY_TYPE = 1


@message
class FindCoordinatorRequest:
    key: str = f(STRING)  # a group id or a transactional id, as key_type says
    key_type: int = f(INT8, since=1, default=GROUP_KEY_TYPE)


@message
class FindCoordinatorResponse:
    throttle_time_ms: int = f(INT32, since=1)
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING, since=1)
    node_id: int = f(INT32)
    host: str = f(STRING)
    port: int = f(INT32)


API = Api(10, "FindCoordinator", FindCoordinatorRequest, FindCoordinatorResponse, 0, 2)
