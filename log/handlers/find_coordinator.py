"""FindCoordinator (key 10), v0-2: this node coordinates every group (and, once transactions
exist, every transactional id), advertised as Metadata advertises it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.error_codes import ErrorCode
from ..protocol.messages.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from .metadata import advertised_broker

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: FindCoordinatorRequest
) -> FindCoordinatorResponse:
    node = advertised_broker(broker, context)
    return FindCoordinatorResponse(
        error_code=ErrorCode.NONE, node_id=node.node_id, host=node.host, port=node.port
    )
