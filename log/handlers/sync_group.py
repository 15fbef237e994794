"""SyncGroup (key 14), v0-3: the leader hands in the assignment its assignor computed; every
member (the leader too) gets its own part back once the leader's request has arrived."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages.sync_group import SyncGroupRequest, SyncGroupResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: SyncGroupRequest
) -> SyncGroupResponse:
    result = await broker.groups.sync_group(
        request.group_id,
        request.generation_id,
        request.member_id,
        request.group_instance_id,
        None,  # protocol type and name arrive in v5+, which is not served
        None,
        [(item.member_id, item.assignment) for item in request.assignments],
    )
    return SyncGroupResponse(error_code=result.error_code, assignment=result.assignment)
