"""InitProducerId (key 22), v0-4, flexible from v2; v5+ (KIP-890, KIP-939) are not served.

From v3 (KIP-360) a producer may send its current id and epoch, so that a producer whose
epoch was fenced or whose transaction timed out can recover by bumping the epoch.
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, NULLABLE_STRING, Api, f, message


@message
class InitProducerIdRequest:
    transactional_id: str | None = f(NULLABLE_STRING)  # null: idempotence only
    transaction_timeout_ms: int = f(INT32)
    producer_id: int = f(INT64, since=3, default=-1)
    producer_epoch: int = f(INT16, since=3, default=-1)


@message
class InitProducerIdResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)
    producer_id: int = f(INT64, default=-1)
    producer_epoch: int = f(INT16)


API = Api(
    22, "InitProducerId", InitProducerIdRequest, InitProducerIdResponse, 0, 4, flexible_from=2
)
