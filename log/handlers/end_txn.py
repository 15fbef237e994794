"""EndTxn (key 26), v0-2: commit or abort a producer's transaction (flexible v3+ and KIP-890's
per-transaction epoch bump, v5, are not served).

Answered once the transaction's markers, and for a commit its consumer offsets, are durable
(see :mod:`streamer.log.transactions.coordinator`). A retried EndTxn of a completed
transaction is answered NONE. A fenced producer is answered PRODUCER_FENCED from v2,
INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.end_txn import EndTxnRequest, EndTxnResponse
from ..transactions.errors import response_code

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

PRODUCER_FENCED_SINCE = 2


async def handle(
    broker: Broker, context: RequestContext, request: EndTxnRequest
) -> EndTxnResponse:
    try:
        await broker.transactions.end_txn(
            request.transactional_id, request.producer_id, request.producer_epoch,
            request.committed,
        )  # fmt: skip
    except LogError as error:
        fenced = context.version >= PRODUCER_FENCED_SINCE
        return EndTxnResponse(error_code=response_code(error, producer_fenced=fenced))
    return EndTxnResponse(error_code=ErrorCode.NONE)
