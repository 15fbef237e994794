"""SyncGroup (key 14), v0-3; flexible versions (4+) and protocol checks (5+) are not served."""

from __future__ import annotations

from ..schema import BYTES, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class SyncGroupRequestAssignment:
    member_id: str = f(STRING)
    assignment: bytes = f(BYTES)


@message
class SyncGroupRequest:
    group_id: str = f(STRING)
    generation_id: int = f(INT32)
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING, since=3)
    # Sent by the leader only; the other members send an empty list.
    assignments: list[SyncGroupRequestAssignment] = f(array(SyncGroupRequestAssignment))


@message
class SyncGroupResponse:
    throttle_time_ms: int = f(INT32, since=1)
    error_code: int = f(INT16)
    assignment: bytes = f(BYTES)


API = Api(14, "SyncGroup", SyncGroupRequest, SyncGroupResponse, 0, 3)
