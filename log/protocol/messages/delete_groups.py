"""DeleteGroups (key 42), v0-1; flexible versions (2+) are not served."""

from __future__ import annotations

from ..schema import INT16, INT32, STRING, Api, array, f, message


@message
class DeleteGroupsRequest:
    groups_names: list[str] = f(array(STRING))


@message
class DeletableGroupResult:
    group_id: str = f(STRING)
    error_code: int = f(INT16)


@message
class DeleteGroupsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[DeletableGroupResult] = f(array(DeletableGroupResult))


API = Api(42, "DeleteGroups", DeleteGroupsRequest, DeleteGroupsResponse, 0, 1)
