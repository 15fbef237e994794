"""WindowedAggregator on hand-written streams: tumbling and hopping windows, emit modes,
lateness, closing, expiry, idle partitions, queries, statistics, bad arguments."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from streamer.operators import (
    HoppingWindows,
    Result,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowedAggregator,
    WindowError,
    aggregate,
    aggregates,
)


def R(key: Any, start: int, end: int, value: Any, final: bool = False) -> Result:  # noqa: N802
    return Result(key, start, end, value, final)


def windows_in(store: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v for k, v in store.items() if k != "__watermark__"}


def test_tumbling_current_emits_each_update() -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={})
    assert counts.add("a", "x", 1) == [R("a", 0, 10, 1)]
    assert counts.add("b", "x", 2) == [R("b", 0, 10, 1)]
    assert counts.add("a", "x", 9) == [R("a", 0, 10, 2)]
    assert counts.add("a", "x", 10) == [R("a", 10, 20, 1)]  # closes [0, 10): nothing more
    assert counts.advance(10**6) == []


def test_tumbling_final_emits_each_window_once_when_it_closes() -> None:
    store: dict[Any, Any] = {}
    sums = WindowedAggregator(
        TumblingWindows(10, grace_ms=5), aggregates.sum(), store=store, emit="final"
    )
    assert sums.add("a", 1, 3) == []
    assert sums.add("b", 2, 8) == []
    assert sums.add("a", 4, 14) == []  # watermark 14 < 10 + 5: [0, 10) still open
    assert sums.add("a", 5, 9) == []  # in grace: counted
    assert sums.add("c", 0, 15) == [R("a", 0, 10, 6, True), R("b", 0, 10, 2, True)]
    assert sums.add("a", 100, 2) == []  # late: [0, 10) closed
    assert sums.late_events == 1
    assert sums.advance(25) == [R("a", 10, 20, 4, True), R("c", 10, 20, 0, True)]
    assert sums.advance(25) == []  # emitted once
    assert store["__watermark__"] == 25


def test_hopping_event_late_for_some_windows_goes_into_the_open_ones() -> None:
    late: list[tuple[Any, Any, int]] = []
    counts = WindowedAggregator(
        HoppingWindows(10, 5), aggregates.count(), store={},
        on_late=lambda *event: late.append(event),
    )
    assert counts.add("a", "x", 12) == [R("a", 5, 15, 1), R("a", 10, 20, 1)]
    # 7 is in [0, 10), closed at watermark 12, and [5, 15), open
    assert counts.add("a", "y", 7) == [R("a", 5, 15, 2)]
    assert counts.add("a", "z", 2) == []  # only in [0, 10): late
    assert late == [("a", "z", 2)]
    assert counts.statistics().late_events == 1


def test_emit_order_of_windows_closing_together() -> None:
    counts = WindowedAggregator(HoppingWindows(10, 5), aggregates.count(), store={}, emit="final")
    for key in ("b", "a"):
        counts.add(key, None, 7)
    assert counts.advance(100) == [
        R("a", 0, 10, 1, True), R("b", 0, 10, 1, True),
        R("a", 5, 15, 1, True), R("b", 5, 15, 1, True),
    ]


def test_keys_that_do_not_compare_still_come_out_in_a_fixed_order() -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={}, emit="final")
    for key in ("a", 1, b"x", None, (1, "t")):
        counts.add(key, None, 3)
    closed = counts.advance(10)
    # by type name (NoneType, bytes, int, str, tuple), then repr
    assert [r.key for r in closed] == [None, b"x", 1, "a", (1, "t")]


def test_advance_on_an_idle_partition_closes_windows() -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={}, emit="final")
    counts.add("a", None, 1)
    assert counts.advance(9) == []
    assert counts.advance(5) == []  # never back
    assert counts.watermark_ms == 9
    assert counts.advance(10) == [R("a", 0, 10, 1, True)]
    assert counts.add("a", None, 8) == []  # the window it belongs to has closed
    assert counts.late_events == 1


def test_closed_windows_stay_queryable_until_retention_then_never_return() -> None:
    store: dict[Any, Any] = {}
    counts = WindowedAggregator(
        TumblingWindows(10, retention_ms=5), aggregates.count(), store=store
    )
    counts.add("a", None, 1)
    counts.add("a", None, 2)
    counts.add("b", None, 12)
    assert ("w", "a", 0, 10) in store
    assert counts.windows("a") == [R("a", 0, 10, 2, True)]  # closed: final
    assert counts.statistics().closed_windows == 1
    counts.advance(14)
    assert counts.get("a", 5) == 2
    counts.advance(15)  # close 10 + retention 5
    assert ("w", "a", 0, 10) not in store
    assert counts.windows("a") == []
    assert counts.add("a", None, 3) == []  # late: does not bring the window back
    assert ("w", "a", 0, 10) not in store
    assert windows_in(store) == {("w", "b", 10, 20): 1}


def test_zero_retention_deletes_a_window_as_it_closes() -> None:
    store: dict[Any, Any] = {}
    counts = WindowedAggregator(
        TumblingWindows(10, retention_ms=0), aggregates.count(), store=store, emit="final"
    )
    counts.add("a", None, 1)
    assert counts.advance(10) == [R("a", 0, 10, 1, True)]
    assert windows_in(store) == {}


def test_default_late_handler_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={})
    counts.add("a", None, 25)
    with caplog.at_level(logging.DEBUG, logger="streamer.operators"):
        assert counts.add("a", None, 3) == []
    assert counts.late_events == 1
    assert "late event dropped: key='a' timestamp_ms=3 watermark_ms=25" in caplog.text


def test_get_and_windows() -> None:
    sums = WindowedAggregator(HoppingWindows(10, 5, grace_ms=10), aggregates.sum(), store={})
    assert sums.get("a") is None
    sums.add("a", 2, 6)
    sums.add("a", 3, 12)
    assert sums.windows("a") == [R("a", 0, 10, 2), R("a", 5, 15, 5), R("a", 10, 20, 3)]
    assert sums.get("a") == 3  # at the watermark (12): the latest window holding it
    assert sums.get("a", 7) == 5
    assert sums.get("a", 3) == 2
    assert sums.get("a", 20, default=-1) == -1
    assert sums.get("b", 7, default=0) == 0


def test_statistics_is_a_frozen_snapshot() -> None:
    counts = WindowedAggregator(TumblingWindows(10), aggregates.count(), store={}, emit="final")
    counts.add("a", None, 1)
    counts.add("b", None, 11)
    counts.add("a", None, 0)
    snapshot = counts.statistics()
    assert dataclasses.asdict(snapshot) == {
        "kind": "tumbling", "emit": "final", "watermark_ms": 11, "events": 3,
        "late_events": 1, "open_windows": 1, "closed_windows": 1, "finals_emitted": 1,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.events = 0  # type: ignore[misc]
    counts.advance(100)
    assert snapshot.open_windows == 1


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        R("a", 0, 10, 1).value = 2  # type: ignore[misc]


@pytest.mark.parametrize("window", [SessionWindows(5), SlidingWindows(5)])
def test_windows_that_merge_need_a_mergeable_aggregate(window: Any) -> None:
    collect = aggregate(list, lambda acc, v: [*acc, v], name="collect")
    with pytest.raises(WindowError, match="collect has no merge: pass merge= to aggregate()"):
        WindowedAggregator(window, collect, store={})
    WindowedAggregator(TumblingWindows(5), collect, store={})  # fine without merge


def test_bad_arguments() -> None:
    with pytest.raises(WindowError, match='emit is "current" or "final", got \'sometimes\''):
        WindowedAggregator(TumblingWindows(5), aggregates.count(), store={}, emit="sometimes")  # type: ignore[arg-type]
    with pytest.raises(WindowError, match="not a window definition"):
        WindowedAggregator(5, aggregates.count(), store={})  # type: ignore[arg-type]
