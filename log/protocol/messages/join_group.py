"""JoinGroup (key 11), v0-5; flexible versions (6+) and join reasons (8+) are not served."""

from __future__ import annotations

from ..schema import BYTES, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class JoinGroupRequestProtocol:
    name: str = f(STRING)  # an assignor, e.g. "range"
    metadata: bytes = f(BYTES)


@message
class JoinGroupRequest:
    group_id: str = f(STRING)
    session_timeout_ms: int = f(INT32)
    rebalance_timeout_ms: int = f(INT32, since=1, default=-1)
    member_id: str = f(STRING)  # "" on a first join
    group_instance_id: str | None = f(NULLABLE_STRING, since=5)
    protocol_type: str = f(STRING)
    protocols: list[JoinGroupRequestProtocol] = f(array(JoinGroupRequestProtocol))


@message
class JoinGroupResponseMember:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING, since=5)
    metadata: bytes = f(BYTES)


@message
class JoinGroupResponse:
    throttle_time_ms: int = f(INT32, since=2)
    error_code: int = f(INT16)
    generation_id: int = f(INT32, default=-1)
    protocol_name: str = f(STRING)
    leader: str = f(STRING)
    member_id: str = f(STRING)
    members: list[JoinGroupResponseMember] = f(array(JoinGroupResponseMember))  # leader only


API = Api(11, "JoinGroup", JoinGroupRequest, JoinGroupResponse, 0, 5)
