"""EndTxn (key 26), v0-2; flexible versions (3+) and epoch bumps (5+, KIP-890) not served."""

from __future__ import annotations

from ..schema import BOOL, INT16, INT32, INT64, STRING, Api, f, message


@message
class EndTxnRequest:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    committed: bool = f(BOOL)  # False: abort


@message
class EndTxnResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)


API = Api(26, "EndTxn", EndTxnRequest, EndTxnResponse, 0, 2)
