"""The embedded transport's consumer and reader with ``isolation_level="read_committed"``:
they stop at the last stable offset, skip aborted transactions, wake on the marker, and
never hand out a control batch; the default (read_uncommitted) is unchanged.

Transactional batches are appended to the log directly and markers written with
``Broker.write_marker``, as the transaction coordinator does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from streamer.events import TopicPartition
from streamer.transport.base import TopicSpec
from streamer.transport.embedded import EmbeddedTransport
from streamer.transport.embedded_consumer import EmbeddedConsumer
from tests.log.batches import Record, build_batch

T = TypeVar("T")
TIMEOUT_S = 20.0
TOPIC = "txn"
TP = TopicPartition(TOPIC, 0)
P1, P2, P3 = 3001, 3002, 3003


def run(scenario: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario, TIMEOUT_S)

    return asyncio.run(bounded())


class Recorder:
    async def on_partitions_revoked(self, partitions: frozenset[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        pass


class Writer:
    """Transactional and plain batches appended to the transport's log, and markers."""

    def __init__(self, transport: EmbeddedTransport) -> None:
        self.broker = transport.broker
        self.sequences: dict[int, int] = {}

    def send(self, producer_id: int, *values: bytes) -> int:
        sequence = self.sequences.get(producer_id, 0)
        self.sequences[producer_id] = sequence + len(values)
        return self._append(build_batch(
            [Record(value, value) for value in values], producer_id=producer_id,
            producer_epoch=0, base_sequence=sequence, transactional=True,
        ))  # fmt: skip

    def plain(self, *values: bytes) -> int:
        return self._append(build_batch([Record(value, value) for value in values]))

    def _append(self, batch: bytes) -> int:
        offset: int = self.broker.log.partition(TOPIC, 0).append(batch).base_offset
        self.broker.notify_append(TOPIC, 0)
        return offset

    async def end(self, producer_id: int, *, commit: bool) -> int:
        return await self.broker.write_marker(TOPIC, 0, producer_id, 0, commit, 0)


async def history(writer: Writer) -> None:
    """0-1 P1 (aborted at 4), 2 plain, 3 P2 (committed at 5), 6 P3 open, 7 plain."""
    writer.send(P1, b"a1", b"a2")
    writer.plain(b"p1")
    writer.send(P2, b"c1")
    assert await writer.end(P1, commit=False) == 4
    assert await writer.end(P2, commit=True) == 5
    assert writer.send(P3, b"o1") == 6
    writer.plain(b"p2")


async def started() -> EmbeddedTransport:
    transport = EmbeddedTransport("memory://", app_id="test", listen=None,
                                  heartbeat_interval_ms=100)  # fmt: skip
    await transport.start()
    await transport.ensure_topics([TopicSpec(TOPIC, 1)])
    return transport


async def values(consumer: EmbeddedConsumer, timeout_ms: int = 200) -> list[bytes | None]:
    found: list[bytes | None] = []
    for _, events in await consumer.fetch(timeout_ms, 100):
        found.extend(event.value for event in events)
    return found


def test_the_consumer_reads_committed_data_and_wakes_on_the_marker() -> None:
    async def scenario() -> None:
        transport = await started()
        try:
            writer = Writer(transport)
            await history(writer)
            committed = transport.consumer("c", [TOPIC], Recorder(),
                                           isolation_level="read_committed")  # fmt: skip
            uncommitted = transport.consumer("u", [TOPIC], Recorder())
            await committed.start()
            await uncommitted.start()
            assert await values(committed) == [b"p1", b"c1"]
            assert await values(committed) == []  # p2 waits behind P3's transaction
            assert await values(uncommitted) == [b"a1", b"a2", b"p1", b"c1", b"o1", b"p2"]

            began = time.monotonic()
            waiting = asyncio.ensure_future(values(committed, 5_000))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await writer.end(P3, commit=True)
            assert await waiting == [b"o1", b"p2"]
            assert time.monotonic() - began < 2
            # A later aborted transaction is skipped; the records after it are read.
            writer.send(P1, b"a3")
            await writer.end(P1, commit=False)
            writer.plain(b"p3")
            assert await values(committed) == [b"p3"]
            assert await values(uncommitted) == [b"a3", b"p3"]
            await committed.close()
            await uncommitted.close()
        finally:
            await transport.close()

    run(scenario())


def test_latest_is_the_stable_offset_for_read_committed() -> None:
    async def scenario() -> None:
        transport = await started()
        try:
            writer = Writer(transport)
            await history(writer)
            committed = transport.consumer("c", [TOPIC], Recorder(), auto_offset_reset="latest",
                                           isolation_level="read_committed")  # fmt: skip
            uncommitted = transport.consumer("u", [TOPIC], Recorder(),
                                             auto_offset_reset="latest")  # fmt: skip
            await committed.start()
            await uncommitted.start()
            assert committed.statistics().positions == {TP: 6}
            assert uncommitted.statistics().positions == {TP: 8}
            await writer.end(P3, commit=True)
            assert await values(committed) == [b"o1", b"p2"]
            assert await values(uncommitted) == []
            await committed.close()
            await uncommitted.close()
        finally:
            await transport.close()

    run(scenario())


def test_the_reader_reads_committed_data_up_to_the_stable_offset() -> None:
    async def scenario() -> None:
        transport = await started()
        try:
            writer = Writer(transport)
            await history(writer)
            reader = transport.reader(isolation_level="read_committed")
            assert await reader.end_offsets([TP]) == {TP: 6}
            assert await transport.reader().end_offsets([TP]) == {TP: 8}
            reader.assign({TP: 0})
            found = [e.value for _, events in await reader.fetch(100, 100) for e in events]
            assert found == [b"p1", b"c1"]
            assert await reader.position(TP) == 6
            assert await reader.fetch(100, 100) == []
            await writer.end(P3, commit=True)
            assert await reader.end_offsets([TP]) == {TP: 9}
            found = [e.value for _, events in await reader.fetch(100, 100) for e in events]
            assert found == [b"o1", b"p2"]
            assert await reader.position(TP) == 9  # past the commit marker
            await reader.close()
        finally:
            await transport.close()

    run(scenario())


def test_an_unknown_isolation_level_is_refused() -> None:
    async def scenario() -> None:
        transport = await started()
        try:
            with pytest.raises(ValueError, match="isolation_level"):
                transport.reader(isolation_level="read_everything")
            with pytest.raises(ValueError, match="isolation_level"):
                transport.consumer("g", [TOPIC], Recorder(), isolation_level="serializable")
        finally:
            await transport.close()

    run(scenario())
