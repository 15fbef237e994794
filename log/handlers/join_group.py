"""JoinGroup (key 11), v0-5: join or rejoin a consumer group; a long poll that the
coordinator answers when the join phase ends. From v4 a new member first gets
MEMBER_ID_REQUIRED with its id, and joins again with it (KIP-394)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages.join_group import (
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroupResponseMember,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

# v0 has no rebalance timeout: Kafka used the session timeout for both.
_V0 = 0


async def handle(
    broker: Broker, context: RequestContext, request: JoinGroupRequest
) -> JoinGroupResponse:
    rebalance_timeout_ms = (
        request.session_timeout_ms if context.version == _V0 else request.rebalance_timeout_ms
    )
    result = await broker.groups.join_group(
        request.group_id,
        request.member_id,
        request.group_instance_id,
        request.protocol_type,
        [(protocol.name, protocol.metadata) for protocol in request.protocols],
        request.session_timeout_ms,
        rebalance_timeout_ms,
        context.header.client_id or "",
        context.client_host,
        context.version >= 4,
    )
    return JoinGroupResponse(
        error_code=result.error_code,
        generation_id=result.generation_id,
        protocol_name=result.protocol_name or "",
        leader=result.leader_id,
        member_id=result.member_id,
        members=[
            JoinGroupResponseMember(
                member_id=member.member_id,
                group_instance_id=member.group_instance_id,
                metadata=member.metadata,
            )
            for member in result.members
        ],
    )
