"""InitProducerId (key 22), v0-4 (v2+ flexible): a producer id and epoch for an idempotent
producer.

Ids come from the node's durable allocator (:mod:`streamer.log.cluster`), so none is
reused after a restart. From v3 (KIP-360) an idempotent producer that sends its current id
and epoch gets the epoch bumped, which resets its sequence numbers after an error it could
not otherwise recover from; at the last epoch it gets a fresh id.

Skipped: transactional ids (refused until the transaction coordinator exists).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..protocol.error_codes import ErrorCode
from ..protocol.messages.init_producer_id import InitProducerIdRequest, InitProducerIdResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

logger = logging.getLogger("streamer.broker")

EPOCH_MAX = 32767  # an int16


async def handle(
    broker: Broker, context: RequestContext, request: InitProducerIdRequest
) -> InitProducerIdResponse:
    if request.transactional_id is not None:
        logger.warning(
            "client %s asked for transactional id %r: transactions are not served yet",
            context.header.client_id, request.transactional_id,
        )
        return InitProducerIdResponse(
            error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        )
    if request.producer_id >= 0 and 0 <= request.producer_epoch < EPOCH_MAX:
        return InitProducerIdResponse(
            error_code=ErrorCode.NONE,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch + 1,
        )
    producer_id = await asyncio.to_thread(broker.cluster.next_producer_id)
    return InitProducerIdResponse(error_code=ErrorCode.NONE, producer_id=producer_id,
                                  producer_epoch=0)
