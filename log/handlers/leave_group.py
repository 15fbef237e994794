"""LeaveGroup (key 13), v0-3: members leave at once and the group rebalances without them.
Up to v2 a request names one member; from v3 a batch, each with its own error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.error_codes import ErrorCode
from ..protocol.messages.leave_group import LeaveGroupRequest, LeaveGroupResponse, MemberResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: LeaveGroupRequest
) -> LeaveGroupResponse:
    if context.version < 3:
        members: list[tuple[str, str | None]] = [(request.member_id, None)]
    else:
        members = [(member.member_id, member.group_instance_id) for member in request.members]
    result = broker.groups.leave_group(request.group_id, members)
    error_code = result.error_code
    if context.version < 3 and error_code == ErrorCode.NONE and result.members:
        error_code = result.members[0].error_code  # one member, no per-member errors
    return LeaveGroupResponse(
        error_code=error_code,
        members=[
            MemberResponse(
                member_id=member.member_id,
                group_instance_id=member.group_instance_id,
                error_code=member.error_code,
            )
            for member in result.members
        ],
    )
