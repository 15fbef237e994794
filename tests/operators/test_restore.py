"""State lives in the store alone: a new aggregator over a copy of the store, restored
mid-stream, carries on exactly like one that never stopped."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.operators import (
    SlidingWindows,
    TumblingWindows,
    WindowDefinition,
    WindowedAggregator,
    WindowError,
    aggregates,
)

from .oracle import Event, JsonStore
from .strategies import AGGREGATES, definitions, new_aggregator, run, streams

KINDS = ["tumbling", "hopping", "sliding", "session"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.data())
def test_restore_mid_stream_carries_on_identically(kind: str, data: st.DataObject) -> None:
    definition: WindowDefinition = data.draw(definitions(kind))
    aggregate_name = data.draw(st.sampled_from(sorted(AGGREGATES)))
    emit = data.draw(st.sampled_from(["current", "final"]))
    events: list[Event] = data.draw(streams())
    cut = data.draw(st.integers(0, len(events)))

    uninterrupted = new_aggregator(definition, aggregate_name, emit)
    expected = run(uninterrupted, events)

    store = JsonStore()
    before = new_aggregator(definition, aggregate_name, emit, store)
    head = run(before, events[:cut], finish=False)
    copy = store.copy()
    after = new_aggregator(definition, aggregate_name, emit, copy)
    after.restore()
    assert copy.decoded() == store.decoded()  # nothing was due: restore deletes nothing
    for key in "abcd":
        assert after.windows(key) == before.windows(key)
    restored, original = after.statistics(), before.statistics()
    assert (restored.watermark_ms, restored.open_windows, restored.closed_windows) == (
        original.watermark_ms, original.open_windows, original.closed_windows
    )
    tail = run(after, events[cut:])
    assert head + tail == expected
    assert copy.decoded() == {"__watermark__": 10**12} or not events


def test_restore_from_a_store_that_gives_keys_back_as_lists() -> None:
    store = JsonStore()
    first = WindowedAggregator(SlidingWindows(10), aggregates.count(), store=store, emit="final")
    first.add(("user", 1), None, 5)
    first.add(("user", 1), None, 8)
    assert any(isinstance(key, list) for key, _ in store.items())
    second = WindowedAggregator(SlidingWindows(10), aggregates.count(), store=store, emit="final")
    second.restore()
    closed = second.add(("user", 1), None, 9)  # [-5, 5] closed before the restart
    assert [(r.key, r.start_ms, r.end_ms, r.value) for r in closed] == [(("user", 1), -2, 8, 2)]
    assert [(r.key, r.start_ms, r.end_ms, r.value) for r in second.advance(100)] == [
        (("user", 1), -1, 9, 3), (("user", 1), 6, 16, 2), (("user", 1), 9, 19, 1),
    ]


def test_restore_deletes_what_is_past_its_time() -> None:
    store: dict[Any, Any] = {
        "__watermark__": 100,
        ("w", "a", 0, 10): 3,  # closed at 10, expired at 20
        ("w", "a", 80, 90): 2,  # closed at 90, kept until 100: expired
        ("w", "a", 90, 100): 1,  # closed at 100, kept until 110
        ("w", "a", 100, 110): 4,  # open
    }
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store=store)
    counts.restore()
    assert set(store) == {"__watermark__", ("w", "a", 90, 100), ("w", "a", 100, 110)}
    assert [(r.start_ms, r.value, r.final) for r in counts.windows("a")] == [
        (90, 1, True), (100, 4, False)
    ]
    assert counts.add("a", None, 105) == [counts.windows("a")[1]]
    assert counts.get("a") == 5


@pytest.mark.parametrize(
    "foreign", [("x", 1), "other", ("w", "a", "0", 10), ("r", "a", 5)]
)
def test_restore_refuses_entries_it_did_not_write(foreign: Any) -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={foreign: 1})
    with pytest.raises(WindowError, match="tumbling window store: unexpected key"):
        counts.restore()
