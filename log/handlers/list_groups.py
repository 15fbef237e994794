"""ListGroups (key 16), v0-2: every group this node coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages.list_groups import ListedGroup, ListGroupsRequest, ListGroupsResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: ListGroupsRequest
) -> ListGroupsResponse:
    result = broker.groups.list_groups()
    return ListGroupsResponse(
        error_code=result.error_code,
        groups=[ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type)
                for g in result.groups],
    )
