"""read_committed through the real server: Fetch's last stable offset and aborted list, a
fetch parked at the stable offset woken by the marker, ListOffsets, and real Kafka clients
(aiokafka, confluent-kafka) that must never hand out an aborted record.

The transaction coordinator is not used: transactional batches are appended on the
server's loop and markers written with ``Broker.write_marker``, as the coordinator does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.record.default_records import DefaultRecordBatch
from confluent_kafka import Consumer, TopicPartition
from streamer.log.protocol.messages.fetch import (
    FetchPartition,
    FetchPartitionData,
    FetchRequest,
    FetchTopic,
)
from streamer.log.protocol.messages.list_offsets import (
    LATEST_TIMESTAMP,
    ListOffsetsPartition,
    ListOffsetsRequest,
    ListOffsetsTopic,
)

from .batches import Record, build_batch, split_wire
from .server.conftest import RawClient, ServerThread

P1, P2, P3 = 2001, 2002, 2003
TIMEOUT_S = 20.0
_topics = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread()
    yield running
    running.close()


@pytest.fixture
def client(server: ServerThread) -> Iterator[RawClient]:
    raw = RawClient(server.port)
    yield raw
    raw.close()


@pytest.fixture
def topic() -> str:
    return f"txn-{next(_topics)}-{time.monotonic_ns()}"


class Writer:
    """Appends to partition 0 of a topic on the server's loop, as Produce and the
    coordinator do (waking parked fetches)."""

    def __init__(self, server: ServerThread, topic: str) -> None:
        self.server = server
        self.topic = topic
        self.sequences: dict[int, int] = {}

    def send(self, producer_id: int, *values: bytes) -> int:
        sequence = self.sequences.get(producer_id, 0)
        self.sequences[producer_id] = sequence + len(values)
        batch = build_batch(
            [Record(None, value) for value in values], producer_id=producer_id,
            producer_epoch=0, base_sequence=sequence, transactional=True,
        )  # fmt: skip
        return self._append(batch)

    def plain(self, *values: bytes) -> int:
        return self._append(build_batch([Record(None, value) for value in values]))

    def _append(self, batch: bytes) -> int:
        async def append() -> int:
            broker = self.server.server.broker
            offset = broker.partition(self.topic, 0, create=True).append(batch).base_offset
            broker.notify_append(self.topic, 0)
            return offset

        offset: int = self.server.call(append())
        return offset

    def end(self, producer_id: int, *, commit: bool) -> int:
        broker = self.server.server.broker
        offset: int = self.server.call(
            broker.write_marker(self.topic, 0, producer_id, 0, commit, 5)
        )
        return offset


def fetch(
    client: RawClient, topic: str, offset: int, *, committed: bool, max_wait_ms: int = 0,
    version: int = 11,
) -> FetchPartitionData:  # fmt: skip
    request = FetchRequest(
        max_wait_ms=max_wait_ms, min_bytes=1, isolation_level=int(committed),
        topics=[FetchTopic(topic=topic, partitions=[
            FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20)
        ])],
    )  # fmt: skip
    response = client.request(request, version)
    data: FetchPartitionData = response.responses[0].partitions[0]  # type: ignore[attr-defined]
    return data


def values(data: FetchPartitionData) -> list[bytes | None]:
    """Every record value in the answer, control batches and aborted ones included."""
    found: list[bytes | None] = []
    for raw in split_wire(bytes(data.records or b"")):
        batch = DefaultRecordBatch(raw)
        if not batch.is_control_batch:
            found.extend(record.value for record in batch)
    return found


def _history(writer: Writer) -> None:
    """0-1 P1 (aborted at 4), 2 plain, 3 P2 (committed at 5), 6 P3 open, 7 plain."""
    writer.send(P1, b"a1", b"a2")
    writer.plain(b"p1")
    writer.send(P2, b"c1")
    assert writer.end(P1, commit=False) == 4
    assert writer.end(P2, commit=True) == 5
    assert writer.send(P3, b"o1") == 6
    writer.plain(b"p2")


# -- the Fetch and ListOffsets answers -----------------------------------------------------


@pytest.mark.parametrize("version", [4, 11])
def test_read_committed_fetch_stops_at_the_stable_offset_and_lists_aborts(
    server: ServerThread, client: RawClient, topic: str, version: int
) -> None:
    _history(Writer(server, topic))
    committed = fetch(client, topic, 0, committed=True, version=version)
    assert committed.error_code == 0
    assert (committed.high_watermark, committed.last_stable_offset) == (8, 6)
    assert values(committed) == [b"a1", b"a2", b"p1", b"c1"]  # the client drops a1, a2
    assert [(a.producer_id, a.first_offset) for a in committed.aborted_transactions or []] == [
        (P1, 0)
    ]
    later = fetch(client, topic, 2, committed=True, version=version)
    assert values(later) == [b"p1", b"c1"]
    assert [a.producer_id for a in later.aborted_transactions or []] == [P1]  # ends at 4
    after_abort = fetch(client, topic, 5, committed=True, version=version)
    assert values(after_abort) == []  # the commit marker alone
    assert after_abort.aborted_transactions == []

    uncommitted = fetch(client, topic, 0, committed=False, version=version)
    assert values(uncommitted) == [b"a1", b"a2", b"p1", b"c1", b"o1", b"p2"]
    assert (uncommitted.high_watermark, uncommitted.last_stable_offset) == (8, 6)
    assert uncommitted.aborted_transactions is None


def test_read_committed_fetch_at_the_stable_offset_is_empty(
    server: ServerThread, client: RawClient, topic: str
) -> None:
    _history(Writer(server, topic))
    at_stable = fetch(client, topic, 6, committed=True, max_wait_ms=100)
    assert (at_stable.error_code, values(at_stable), at_stable.last_stable_offset) == (0, [], 6)
    beyond = fetch(client, topic, 7, committed=True)
    assert (beyond.error_code, values(beyond)) == (0, [])
    past_end = fetch(client, topic, 9, committed=True)
    assert past_end.error_code == 1  # OFFSET_OUT_OF_RANGE


def test_a_parked_read_committed_fetch_wakes_on_the_marker(
    server: ServerThread, topic: str
) -> None:
    writer = Writer(server, topic)
    writer.plain(b"before")
    writer.send(P1, b"t1")  # offset 1: the stable offset stays there
    client = RawClient(server.port)
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            parked = pool.submit(fetch, client, topic, 1, committed=True, max_wait_ms=15_000)
            time.sleep(0.3)
            assert not parked.done()
            writer.plain(b"after")  # data past the open transaction wakes it to no avail
            time.sleep(0.3)
            assert not parked.done()
            writer.end(P1, commit=True)
            data = parked.result(TIMEOUT_S)
            elapsed_s = time.monotonic() - started
    finally:
        client.close()
    assert values(data) == [b"t1", b"after"]
    assert data.last_stable_offset == data.high_watermark == 4
    assert 0.5 < elapsed_s < 10


def test_list_offsets_latest_is_the_stable_offset_for_read_committed(
    server: ServerThread, client: RawClient, topic: str
) -> None:
    _history(Writer(server, topic))

    def latest(isolation_level: int) -> int:
        request = ListOffsetsRequest(
            isolation_level=isolation_level,
            topics=[ListOffsetsTopic(name=topic, partitions=[
                ListOffsetsPartition(partition_index=0, timestamp=LATEST_TIMESTAMP)
            ])],
        )  # fmt: skip
        response = client.request(request, 5)
        offset: int = response.topics[0].partitions[0].offset  # type: ignore[attr-defined]
        return offset

    assert (latest(1), latest(0)) == (6, 8)


# -- real clients --------------------------------------------------------------------------


def test_aiokafka_read_committed_never_sees_an_aborted_record(
    server: ServerThread, topic: str
) -> None:
    writer = Writer(server, topic)
    _history(writer)

    async def consume() -> tuple[list[bytes], list[bytes]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=server.bootstrap, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100,
        )  # fmt: skip
        await consumer.start()
        try:
            first = await _collect(consumer, 2)
            await asyncio.to_thread(writer.end, P3, commit=True)
            second = await _collect(consumer, 2)
        finally:
            await consumer.stop()
        return first, second

    first, second = asyncio.run(consume())
    assert first == [b"p1", b"c1"]  # p2 waits behind P3's open transaction
    assert second == [b"o1", b"p2"]


async def _collect(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    """``count`` values, then half a second more to catch any extra one."""
    found: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    quiet_until: float | None = None
    while time.monotonic() < (quiet_until or deadline):
        batches = await consumer.getmany(timeout_ms=100)
        found.extend(record.value for records in batches.values() for record in records)
        if len(found) >= count and quiet_until is None:
            quiet_until = time.monotonic() + 0.5
    return found


def test_confluent_read_committed_never_sees_an_aborted_record(
    server: ServerThread, topic: str
) -> None:
    writer = Writer(server, topic)
    _history(writer)
    consumer = Consumer({
        "bootstrap.servers": server.bootstrap, "group.id": f"{topic}-reader",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
    })  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        first = _poll(consumer, 2)
        writer.end(P3, commit=True)
        writer.send(P1, b"a3")  # a new transaction of P1, aborted
        writer.end(P1, commit=False)
        writer.plain(b"p3")
        second = _poll(consumer, 3)
    finally:
        consumer.close()
    assert first == [b"p1", b"c1"]
    assert second == [b"o1", b"p2", b"p3"]


def _poll(consumer: Consumer, count: int) -> list[bytes]:
    found: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT_S
    quiet_until: float | None = None
    while time.monotonic() < (quiet_until or deadline):
        message = consumer.poll(0.1)
        if message is not None:
            assert message.error() is None, message.error()
            found.append(message.value())
        if len(found) >= count and quiet_until is None:
            quiet_until = time.monotonic() + 0.5
    return found
