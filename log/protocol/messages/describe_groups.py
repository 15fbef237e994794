"""DescribeGroups (key 15), v0-4; flexible versions (5+) and error messages (6+) not served.

Skipped: authorized operations are always -2147483648 ("not asked").
"""

from __future__ import annotations

from ..schema import BOOL, BYTES, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class DescribeGroupsRequest:
    groups: list[str] = f(array(STRING))
    include_authorized_operations: bool = f(BOOL, since=3)


@message
class DescribedGroupMember:
    member_id: str = f(STRING)
    group_instance_id: str | None = f(NULLABLE_STRING, since=4)
    client_id: str = f(STRING)
    client_host: str = f(STRING)
    member_metadata: bytes = f(BYTES)
    member_assignment: bytes = f(BYTES)


@message
class DescribedGroup:
    error_code: int = f(INT16)
    group_id: str = f(STRING)
    group_state: str = f(STRING)  # "Stable", "PreparingRebalance", "Dead", ...
    protocol_type: str = f(STRING)
    protocol_data: str = f(STRING)  # the chosen assignor once the group is stable
    members: list[DescribedGroupMember] = f(array(DescribedGroupMember))
    authorized_operations: int = f(INT32, since=3, default=-(2**31))


@message
class DescribeGroupsResponse:
    throttle_time_ms: int = f(INT32, since=1)
    groups: list[DescribedGroup] = f(array(DescribedGroup))


API = Api(15, "DescribeGroups", DescribeGroupsRequest, DescribeGroupsResponse, 0, 4)
