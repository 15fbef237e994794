"""AddOffsetsToTxn (key 25), v0-2: add a consumer group to a producer's transaction, before
TxnOffsetCommit sends the group's offsets (flexible v3+ are not served).

A fenced producer is answered PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.add_offsets_to_txn import (
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
)
from ..transactions.errors import response_code

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

PRODUCER_FENCED_SINCE = 2


async def handle(
    broker: Broker, context: RequestContext, request: AddOffsetsToTxnRequest
) -> AddOffsetsToTxnResponse:
    try:
        await broker.transactions.add_offsets(
            request.transactional_id, request.producer_id, request.producer_epoch,
            request.group_id,
        )  # fmt: skip
    except LogError as error:
        fenced = context.version >= PRODUCER_FENCED_SINCE
        return AddOffsetsToTxnResponse(error_code=response_code(error, producer_fenced=fenced))
    return AddOffsetsToTxnResponse(error_code=ErrorCode.NONE)
