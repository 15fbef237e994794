"""Fetch (key 1), v4-11: whole record batches from each partition, long-polled.

A fetch that finds fewer than ``min_bytes`` parks until an append to one of its partitions
or ``max_wait_ms``, whichever comes first. ``partition_max_bytes`` and ``max_bytes`` bound
the answer, except that the first batch found is always returned whole, so a consumer
always makes progress (as in Kafka). ``read_committed`` reads up to the last stable offset,
which equals the high watermark until transactions exist.

Skipped: fetch sessions (KIP-227) are declined with session id 0, so clients send full
requests; follower fetches (``replica_id`` ≥ 0) are answered like a consumer's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.fetch import (
    READ_COMMITTED,
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
    try:
        partition = broker.partition(topic, index, create=False)
        # A view: the batches go from the read buffer to the socket without another copy.
        records = partition.read_view(offset, max(max_bytes, 1))[0] if max_bytes > 0 else b""
    except LogError as error:
        return FetchPartitionData(partition_index=index, error_code=error.kafka_error_code,
                                  records=b"")
    high_watermark = partition.high_watermark
    return FetchPartitionData(
        partition_index=index,
        error_code=ErrorCode.NONE,
        high_watermark=high_watermark,
        last_stable_offset=high_watermark,
        log_start_offset=partition.log_start_offset,
        aborted_transactions=[] if committed else None,
        records=records,
    )
