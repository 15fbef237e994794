"""FindCoordinator (key 10), v0-2: this node coordinates every group and every transactional
id (key type 1, v1+), advertised as Metadata advertises it. An unknown key type, or an
empty transactional id, is answered INVALID_REQUEST."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.error_codes import ErrorCode
from ..protocol.messages.find_coordinator import (
    GROUP_KEY_TYPE,
    TRANSACTION_KEY_TYPE,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from .metadata import advertised_broker

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: FindCoordinatorRequest
) -> FindCoordinatorResponse:
    if request.key_type not in (GROUP_KEY_TYPE, TRANSACTION_KEY_TYPE) or (
        request.key_type == TRANSACTION_KEY_TYPE and not request.key
    ):
        return FindCoordinatorResponse(
            error_code=ErrorCode.INVALID_REQUEST, node_id=-1, port=-1,
            error_message=f"key type {request.key_type} with key {request.key!r}",
        )  # fmt: skip
    node = advertised_broker(broker, context)
    return FindCoordinatorResponse(
        error_code=ErrorCode.NONE, node_id=node.node_id, host=node.host, port=node.port
    )
