"""Heartbeat (key 12), v0-3; flexible versions (4+) are not served."""

from __future__ import annotations

from ..schema import INT16, INT32, NULLABLE_STRING, STRING, Api, f, message


@message
class HeartbeatRequest:
    group_id: str = f(STRING)
    generation_id: int = f(INT32)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING, since=3)


@message
class HeartbeatResponse:
    throttle_time_ms: int = f(INT32, since=1)
    error_code: int = f(INT16)


API = Api(12, "Heartbeat", HeartbeatRequest, HeartbeatResponse, 0, 3)
