"""LeaveGroup (key 13), v0-3; flexible versions (4+) and leave reasons (5+) are not served.

Up to v2 one member leaves; from v3 (KIP-345) a request names a batch of members.
"""

from __future__ import annotations

from ..schema import INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class MemberIdentity:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING)


@message
class LeaveGroupRequest:
    group_id: str = f(STRING)
    member_id: str = f(STRING, until=2)
    members: list[MemberIdentity] = f(array(MemberIdentity), since=3)


@message
class MemberResponse:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING)
    error_code: int = f(INT16)


@message
class LeaveGroupResponse:
    throttle_time_ms: int = f(INT32, since=1)
    error_code: int = f(INT16)
    members: list[MemberResponse] = f(array(MemberResponse), since=3)


API = Api(13, "LeaveGroup", LeaveGroupRequest, LeaveGroupResponse, 0, 3)
