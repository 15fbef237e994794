"""Hypothesis strategies and runners shared by the oracle and restore tests."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from streamer.operators import (
    Aggregate,
    HoppingWindows,
    Result,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowDefinition,
    WindowedAggregator,
    aggregate,
    aggregates,
)

from .oracle import Event, JsonStore

FAR_FUTURE_MS = 10**12

AGGREGATES: dict[str, Callable[[], Aggregate]] = {
    "count": aggregates.count,
    "sum": aggregates.sum,
    "min": aggregates.min,
    "max": aggregates.max,
    "mean": aggregates.mean,
    "reduce": lambda: aggregates.reduce(lambda a, b: a + b),
    "sorted": lambda: aggregate(
        list, lambda acc, v: sorted([*acc, v]), merge=lambda a, b: sorted(a + b)
    ),
}


@st.composite
def streams(draw: st.DrawFn, max_events: int = 60) -> list[Event]:
    """Events around a rising watermark: mostly near it, some well behind (late or out of
    order), now and then a long idle jump ahead. Dense streams (scale 1) make ties and
    off-by-one boundaries likely, sparse ones (scale 10) long windows and sessions."""
    count = draw(st.integers(0, max_events))
    scale = draw(st.sampled_from([1, 3, 10]))
    keys = st.sampled_from("abcd"[: draw(st.integers(1, 4))])
    mark = draw(st.integers(0, 10 * scale))
    moves = st.one_of(
        st.integers(-2 * scale, scale), st.integers(-12 * scale, -2 * scale),
        st.integers(15 * scale, 200 * scale),
    )
    events = []
    for _ in range(count):
        timestamp_ms = max(0, mark + draw(moves))
        mark = max(mark, timestamp_ms)
        events.append(Event(draw(keys), draw(st.integers(-5, 9)), timestamp_ms))
    return events


sizes = st.one_of(st.integers(1, 6), st.integers(1, 50))
retentions = st.one_of(st.none(), st.integers(0, 5), st.integers(0, 60))
graces = st.one_of(st.just(0), st.integers(0, 5), st.integers(0, 40))


@st.composite
def definitions(draw: st.DrawFn, kind: str) -> WindowDefinition:
    grace_ms, retention_ms = draw(graces), draw(retentions)
    if kind == "tumbling":
        return TumblingWindows(draw(sizes), grace_ms, retention_ms)
    if kind == "hopping":
        size_ms = draw(sizes)
        return HoppingWindows(size_ms, draw(st.integers(1, size_ms)), grace_ms, retention_ms)
    if kind == "sliding":
        return SlidingWindows(draw(sizes), grace_ms, retention_ms)
    return SessionWindows(draw(sizes), grace_ms, retention_ms)


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def split(events: list[Event], partitions: int) -> list[list[Event]]:
    parts: list[list[Event]] = [[] for _ in range(partitions)]
    for event in events:
        parts[partition_of(event.key, partitions)].append(event)
    return parts


def run(
    aggregator: WindowedAggregator, events: list[Event], *, finish: bool = True
) -> list[list[Result]]:
    """One output list per event, and one for the final advance (if ``finish``)."""
    outputs = [aggregator.add(e.key, e.value, e.timestamp_ms) for e in events]
    if finish:
        outputs.append(aggregator.advance(FAR_FUTURE_MS))
    return outputs


def late_recorder() -> tuple[list[tuple[Any, Any, int]], Callable[[Any, Any, int], None]]:
    seen: list[tuple[Any, Any, int]] = []
    return seen, lambda key, value, timestamp_ms: seen.append((key, value, timestamp_ms))


def new_aggregator(
    definition: WindowDefinition, aggregate_name: str, emit: str, store: Any = None, **kwargs: Any
) -> WindowedAggregator:
    return WindowedAggregator(
        definition, AGGREGATES[aggregate_name](),
        store=JsonStore() if store is None else store, emit=emit,  # type: ignore[arg-type]
        **kwargs,
    )
