"""Stream operators over inboxes the test fills by hand (no worker, no transport)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

import streamer
from streamer.events import Event, TopicPartition
from streamer.inbox import BatchAck, Inbox
from streamer.serialization import SerializationError
from streamer.streams import DecodeFailure, InboxSource, Stream


def _events(values: list[Any], partition: int = 0, start: int = 0) -> list[Event]:
    return [Event("t", partition, start + i, 1000 + i, f"k{i}", v) for i, v in enumerate(values)]


def _stream(app: streamer.App, inbox: Inbox) -> Stream:
    return Stream(app, InboxSource(inbox))


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


async def _collect(iterable: Any, count: int) -> list[Any]:
    out = []
    async for value in iterable:
        out.append(value)
        if len(out) == count:
            break
    return out


def test_map_filter_flat_map_with_sync_and_async_functions() -> None:
    async def main() -> list[Any]:
        app = streamer.App("t")
        inbox = Inbox("t")
        inbox.put_nowait(_events(list(range(10))), None)

        async def halve(value: int) -> float:
            return value / 2

        stream = (_stream(app, inbox).filter(lambda v: v % 2 == 0).map(halve)
                  .flat_map(lambda v: [v, -v]).filter(lambda v: v != 0))
        return await _collect(stream, 8)

    assert run(main()) == [1, -1, 2, -2, 3, -3, 4, -4]


def test_events_carry_key_offset_timestamp_and_mapped_value() -> None:
    async def main() -> list[Event]:
        app = streamer.App("t")
        inbox = Inbox("t")
        inbox.put_nowait(_events(["a", "b"], partition=3, start=40), None)
        return await _collect(_stream(app, inbox).map(str.upper).events(), 2)

    first, second = run(main())
    assert (first.key, first.value, first.partition, first.offset, first.timestamp) == (
        "k0", "A", 3, 40, 1000)
    assert second.offset == 41 and second.value == "B"


def test_a_batch_is_acknowledged_when_the_next_is_asked_for() -> None:
    async def main() -> tuple[int, int]:
        app = streamer.App("t")
        inbox = Inbox("t")
        first = BatchAck(TopicPartition("t", 0), 3, 1)
        inbox.put_nowait(_events([1, 2, 3]), first)
        inbox.put_nowait(_events([4], start=3), BatchAck(TopicPartition("t", 0), 4, 1))
        seen = []
        iterator = aiter(_stream(app, inbox))
        for _ in range(3):
            seen.append(await anext(iterator))
        pending_before = first.pending  # the agent may still be working on event 3
        seen.append(await anext(iterator))
        return pending_before, first.pending

    assert run(main()) == (1, 0)


def test_a_value_that_did_not_decode_raises_in_the_agent() -> None:
    async def main() -> None:
        app = streamer.App("t")
        inbox = Inbox("t")
        events = _events([1, None])
        events[1].value = DecodeFailure(SerializationError("not JSON"))
        inbox.put_nowait(events, None)
        await _collect(_stream(app, inbox), 2)

    with pytest.raises(SerializationError, match="not JSON"):
        run(main())


def test_take_gives_full_lists_then_a_short_one_after_within() -> None:
    async def main() -> tuple[list[list[int]], int]:
        app = streamer.App("t")
        inbox = Inbox("t")
        ack = BatchAck(TopicPartition("t", 0), 5, 1)
        inbox.put_nowait(_events([1, 2, 3, 4, 5]), ack)
        lists = await _collect(_stream(app, inbox).take(2, within=0.05), 3)
        return lists, ack.pending

    lists, pending = run(main())
    assert lists == [[1, 2], [3, 4], [5]]
    assert pending == 1  # the last list is still being handled by the agent


def test_merge_reads_both_sources() -> None:
    async def main() -> list[Any]:
        app = streamer.App("t")
        left, right = Inbox("l"), Inbox("r")
        left.put_nowait(_events(["l1", "l2"]), None)
        right.put_nowait(_events(["r1"]), None)
        merged = _stream(app, left).merge(_stream(app, right))
        return sorted(await _collect(merged, 3))

    assert run(main()) == ["l1", "l2", "r1"]


def test_branch_sends_each_value_to_the_first_matching_branch() -> None:
    async def main() -> tuple[list[int], list[int], list[int]]:
        app = streamer.App("t")
        inbox = Inbox("t")
        inbox.put_nowait(_events(list(range(12))), None)
        evens, threes, rest = _stream(app, inbox).branch(lambda v: v % 2 == 0,
                                                         lambda v: v % 3 == 0)
        return await asyncio.gather(_collect(evens, 6), _collect(threes, 2), _collect(rest, 4))

    evens, threes, rest = run(main())
    assert evens == [0, 2, 4, 6, 8, 10] and threes == [3, 9] and rest == [1, 5, 7, 11]


def test_group_by_lambda_needs_a_name() -> None:
    app = streamer.App("t")
    with pytest.raises(streamer.StreamerError, match="name="):
        _stream(app, Inbox("t")).group_by(lambda v: v)
