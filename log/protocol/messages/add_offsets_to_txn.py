"""AddOffsetsToTxn (key 25), v0-2; flexible versions (3+) are not served.

Adds a group's offsets partition to a transaction, before TxnOffsetCommit sends the offsets.
"""

from __future__ import annotations

from ..schema import INT16, INT32, INT64, STRING, Api, f, message


@message
class AddOffsetsToTxnRequest:
    transactional_id: str = f(STRING)
    producer_id: int = f(INT64)
    producer_epoch: int = f(INT16)
    group_id: str = f(STRING)


@message
class AddOffsetsToTxnResponse:
    throttle_time_ms: int = f(INT32)
    error_code: int = f(INT16)


API = Api(25, "AddOffsetsToTxn", AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, 0, 2)
