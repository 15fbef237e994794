"""Fetch (key 1), v4-11: whole record batches from each partition, long-polled.

A fetch that finds fewer than ``min_bytes`` parks until an append to one of its partitions
(or a transaction marker) or ``max_wait_ms``, whichever comes first. ``partition_max_bytes``
and ``max_bytes`` bound the answer, except that the first batch found is always returned
whole, so a consumer always makes progress (as in Kafka).

``read_committed`` returns only batches below the last stable offset (the first offset of
the oldest open transaction) and lists the aborted transactions that overlap the returned
batches, ``(producer_id, first_offset)``, for the client to skip; a fetch at the last stable
offset waits like an empty one until a marker moves it. Every answer carries the real last
stable offset.

Skipped: fetch sessions (KIP-227) are declined with session id 0, so clients send full
requests; follower fetches (``replica_id`` ≥ 0) are answered like a consumer's.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from ..errors import LogError, OffsetOutOfRangeError
from ..partition import PartitionLog
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.fetch import (
    READ_COMMITTED,
    AbortedTransaction,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext

# A client's max_wait_ms, bounded: a request parked for longer than this is answered anyway.
MAX_WAIT_MS_MAX = 30_000
# baseOffset, batchLength, then (at byte 23) lastOffsetDelta of a stored batch.
_BATCH_PREFIX = struct.Struct(">qi")
_LAST_OFFSET_DELTA = struct.Struct(">i")


async def handle(broker: Broker, context: RequestContext, request: FetchRequest) -> FetchResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(request.max_wait_ms, 0), MAX_WAIT_MS_MAX) / 1000
    wanted = [(t.topic, p.partition) for t in request.topics for p in t.partitions]
    while True:
        responses, size, failed = _read(broker, request)
        remaining_ms = int((deadline - loop.time()) * 1000)
        if size >= request.min_bytes or failed or remaining_ms <= 0 or broker.closing:
            return FetchResponse(error_code=ErrorCode.NONE, session_id=0, responses=responses)
        await broker.wait_for_data(wanted, remaining_ms)


def _read(broker: Broker, request: FetchRequest) -> tuple[list[FetchTopicResponse], int, bool]:
    """Read every partition asked for; returns the answers, their bytes, and whether any
    partition answered with an error (which is returned at once, not waited on)."""
    committed = request.isolation_level == READ_COMMITTED
    budget = request.max_bytes if request.max_bytes > 0 else 0x7FFFFFFF
    size = 0
    failed = False
    responses = []
    for topic in request.topics:
        partitions = []
        for wanted in topic.partitions:
            limit = min(wanted.partition_max_bytes, budget - size)
            data = _read_partition(broker, topic.topic, wanted.partition, wanted.fetch_offset,
                                   limit if size == 0 or limit > 0 else 0, committed)
            failed = failed or data.error_code != ErrorCode.NONE
            size += len(data.records or b"")
            partitions.append(data)
        responses.append(FetchTopicResponse(topic=topic.topic, partitions=partitions))
    return responses, size, failed


def _read_partition(
    broker: Broker, topic: str, index: int, offset: int, max_bytes: int, committed: bool
) -> FetchPartitionData:
    aborted: list[AbortedTransaction] | None = None
    try:
        partition = broker.partition(topic, index, create=False)
        stable_offset = partition.last_stable_offset
        if committed:
            records, aborted = _read_committed(partition, offset, max_bytes, stable_offset)
        else:
            # A view: the batches go from the read buffer to the socket without another copy.
            records = partition.read_view(offset, max(max_bytes, 1))[0] if max_bytes > 0 else b""
    except LogError as error:
        return FetchPartitionData(partition_index=index, error_code=error.kafka_error_code,
                                  records=b"")
    return FetchPartitionData(
        partition_index=index,
        error_code=ErrorCode.NONE,
        high_watermark=partition.high_watermark,
        last_stable_offset=stable_offset,
        log_start_offset=partition.log_start_offset,
        aborted_transactions=aborted,
        records=records,
    )


def _read_committed(
    partition: PartitionLog, offset: int, max_bytes: int, stable_offset: int
) -> tuple[bytes | memoryview, list[AbortedTransaction]]:
    """The batches below ``stable_offset`` from ``offset``, and the aborted transactions
    that overlap them."""
    if offset >= stable_offset:
        if offset > partition.log_end_offset:
            raise OffsetOutOfRangeError(
                f"{partition.name}: offset {offset} is past the log end "
                f"{partition.log_end_offset}"
            )
        return b"", []
    if max_bytes <= 0:
        return b"", []
    records = partition.read_view(offset, max_bytes)[0]
    aborted = partition.aborted_transactions(offset, stable_offset)
    if not aborted and stable_offset >= partition.high_watermark:
        return records, []  # nothing to cut, nothing to skip: the usual case
    size, end = _stable_prefix(records, stable_offset)
    if size < len(records):
        records = memoryview(records)[:size]
    if aborted:
        aborted = partition.aborted_transactions(offset, end)
    return records, [
        AbortedTransaction(producer_id=producer_id, first_offset=first_offset)
        for producer_id, first_offset in aborted
    ]


def _stable_prefix(records: bytes | memoryview, stable_offset: int) -> tuple[int, int]:
    """How many bytes of ``records`` (whole batches) lie below ``stable_offset``, and the
    offset after the last of those batches."""
    position = 0
    end = 0
    while position + 27 <= len(records):
        base_offset, batch_length = _BATCH_PREFIX.unpack_from(records, position)
        if base_offset >= stable_offset:
            break
        end = base_offset + _LAST_OFFSET_DELTA.unpack_from(records, position + 23)[0] + 1
        position += batch_length + 12
    return position, end
