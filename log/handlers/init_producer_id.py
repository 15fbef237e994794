"""InitProducerId (key 22), v0-4 (v2+ flexible): a producer id and epoch, for an idempotent
or a transactional producer.

Without a transactional id: a fresh id from the node's durable allocator
(:mod:`streamer.log.cluster`), or (v3+, KIP-360) the producer's own id with its epoch bumped,
which resets its sequence numbers after an error it could not otherwise recover from; at
the last epoch it gets a fresh id. With one: the transaction coordinator's answer
(:meth:`~streamer.log.transactions.TransactionCoordinator.init_producer_id`), which fences
the id's previous producer.

A fenced producer is answered PRODUCER_FENCED from v4, INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.init_producer_id import InitProducerIdRequest, InitProducerIdResponse
from ..transactions.errors import response_code

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

PRODUCER_FENCED_SINCE = 4


async def handle(
    broker: Broker, context: RequestContext, request: InitProducerIdRequest
) -> InitProducerIdResponse:
    try:
        producer_id, producer_epoch = await broker.transactions.init_producer_id(
            request.transactional_id,
            request.transaction_timeout_ms,
            request.producer_id,
            request.producer_epoch,
        )
    except LogError as error:
        fenced = context.version >= PRODUCER_FENCED_SINCE
        return InitProducerIdResponse(
            error_code=response_code(error, producer_fenced=fenced), producer_epoch=-1
        )
    return InitProducerIdResponse(
        error_code=ErrorCode.NONE, producer_id=producer_id, producer_epoch=producer_epoch
    )
