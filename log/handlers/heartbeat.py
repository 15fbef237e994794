"""Heartbeat (key 12), v0-3: keeps a member's session alive; answers REBALANCE_IN_PROGRESS
when the member must rejoin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages.heartbeat import HeartbeatRequest, HeartbeatResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: HeartbeatRequest
) -> HeartbeatResponse:
    error_code = broker.groups.heartbeat(
        request.group_id, request.generation_id, request.member_id, request.group_instance_id
    )
    return HeartbeatResponse(error_code=error_code)
