"""DeleteGroups (key 42), v0-1: delete groups that have no members, with their committed
offsets (tombstoned in the offsets topic, so they stay deleted after a restart)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages.delete_groups import (
    DeletableGroupResult,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: DeleteGroupsRequest
) -> DeleteGroupsResponse:
    results = await broker.groups.delete_groups(request.groups_names)
    return DeleteGroupsResponse(
        results=[DeletableGroupResult(group_id=r.group_id, error_code=r.error_code)
                 for r in results]
    )
