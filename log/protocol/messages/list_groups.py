"""ListGroups (key 16), v0-2; flexible versions (3+) and state and type filters (4+) not served."""

from __future__ import annotations

from ..schema import INT16, INT32, STRING, Api, array, f, message


@message
class ListGroupsRequest:
    pass


@message
class ListedGroup:
    group_id: str = f(STRING)
    protocol_type: str = f(STRING)


@message
class ListGroupsResponse:
    throttle_time_ms: int = f(INT32, since=1)
    error_code: int = f(INT16)
    groups: list[ListedGroup] = f(array(ListedGroup))


API = Api(16, "ListGroups", ListGroupsRequest, ListGroupsResponse, 0, 2)
