"""Sliding windows and sessions on hand-written streams."""

from __future__ import annotations

from typing import Any

from streamer.operators import (
    Result,
    SessionWindows,
    SlidingWindows,
    WindowedAggregator,
    aggregates,
)


def R(key: Any, start: int, end: int, value: Any, final: bool = False) -> Result:  # noqa: N802
    return Result(key, start, end, value, final)


def window_keys(store: dict[Any, Any]) -> set[Any]:
    return {k for k in store if isinstance(k, tuple) and k[0] == "w"}


# -- sliding ----------------------------------------------------------------------------


def test_sliding_windows_follow_the_records() -> None:
    counts = WindowedAggregator(SlidingWindows(10, grace_ms=100), aggregates.count(), store={})
    assert counts.add("a", None, 8) == [R("a", -2, 8, 1)]
    # [3, 13] ends at the new record; [9, 19] starts just after 8 and now holds 13
    assert counts.add("a", None, 13) == [R("a", 3, 13, 2), R("a", 9, 19, 1)]
    # out of order: joins [3, 13] and [9, 19]; creates [0, 10] and [11, 21] (13 is in it)
    assert counts.add("a", None, 10) == [
        R("a", 0, 10, 2), R("a", 3, 13, 3), R("a", 9, 19, 2), R("a", 11, 21, 1)
    ]
    assert [(r.start_ms, r.end_ms, r.value) for r in counts.windows("a")] == [
        (-2, 8, 1), (0, 10, 2), (3, 13, 3), (9, 19, 2), (11, 21, 1)
    ]
    assert counts.get("a", 10) == 2  # [9, 19], the latest-starting window holding 10


def test_sliding_final_mode_emits_each_window_at_end_plus_one_plus_grace() -> None:
    sums = WindowedAggregator(SlidingWindows(5), aggregates.sum(), store={}, emit="final")
    assert sums.add("a", 1, 0) == []
    # [-5, 0] closes at 0 + 1; the record makes [-2, 3] and [1, 6] (just after 0)
    assert sums.add("a", 2, 3) == [R("a", -5, 0, 1, True)]
    assert sums.add("b", 0, 5) == [R("a", -2, 3, 3, True)]
    assert sums.advance(5) == []
    assert sums.advance(6) == [R("b", 0, 5, 0, True)]
    assert sums.advance(100) == [R("a", 1, 6, 2, True)]


def test_sliding_record_late_for_its_own_window_still_counts_in_later_ones() -> None:
    counts = WindowedAggregator(SlidingWindows(2), aggregates.count(), store={}, emit="final")
    counts.add("a", None, 0)
    finals = counts.add("b", None, 3)  # closes [-2, 0] (close 1)
    assert finals == [R("a", -2, 0, 1, True)]
    # 1 arrives at watermark 3 = 0 + size + 1: its own [-1, 1] closed at 2, but [1, 3], the
    # window just after 0, is open until 4: it is made now, holding 1.
    assert counts.add("a", None, 1) == []
    assert counts.late_events == 0
    assert counts.advance(100) == [R("a", 1, 3, 1, True), R("b", 1, 3, 1, True)]


def test_sliding_late_record_is_dropped() -> None:
    counts = WindowedAggregator(SlidingWindows(2), aggregates.count(), store={})
    counts.add("a", None, 10)
    assert counts.add("a", None, 7) == []  # 10 ≥ 7 + 2 + 1: [7, 9] is closed
    assert counts.late_events == 1


def test_sliding_record_accumulators_are_forgotten() -> None:
    store: dict[Any, Any] = {}
    counts = WindowedAggregator(SlidingWindows(2, retention_ms=0), aggregates.count(), store=store)
    counts.add("a", None, 0)
    assert ("r", "a", 0) in store
    counts.advance(3)
    assert ("r", "a", 0) in store  # [1, 3] could still be made by a record at 1..3
    counts.advance(4)
    assert store == {"__watermark__": 4}


# -- sessions ---------------------------------------------------------------------------


def test_an_event_bridging_two_sessions_merges_them() -> None:
    store: dict[Any, Any] = {}
    counts = WindowedAggregator(
        SessionWindows(5, grace_ms=100), aggregates.count(), store=store
    )
    assert counts.add("a", None, 0) == [R("a", 0, 0, 1)]
    assert counts.add("a", None, 10) == [R("a", 10, 10, 1)]
    assert counts.add("a", None, 5) == [R("a", 0, 10, 3)]  # 5 - 0 ≤ 5 and 10 - 5 ≤ 5
    assert window_keys(store) == {("w", "a", 0, 10)}
    assert counts.add("a", None, 7) == [R("a", 0, 10, 4)]  # inside: same bounds
    assert counts.add("a", None, 16) == [R("a", 16, 16, 1)]  # 16 - 10 > 5
    assert counts.add("a", None, -4) == [R("a", -4, 10, 5)]  # extends backwards
    assert counts.windows("a") == [R("a", -4, 10, 5), R("a", 16, 16, 1)]
    assert counts.get("a", 3) == 5


def test_sessions_final_mode() -> None:
    sums = WindowedAggregator(SessionWindows(5), aggregates.sum(), store={}, emit="final")
    assert sums.add("a", 1, 0) == []
    assert sums.add("a", 2, 4) == []
    assert sums.add("b", 3, 9) == []  # a's [0, 4] closes at 4 + 5 + 1 = 10
    assert sums.add("b", 4, 10) == [R("a", 0, 4, 3, True)]
    assert sums.advance(100) == [R("b", 9, 10, 7, True)]


def test_closed_sessions_never_change() -> None:
    counts = WindowedAggregator(SessionWindows(5), aggregates.count(), store={}, emit="final")
    counts.add("a", None, 0)
    assert counts.add("b", None, 6) == [R("a", 0, 0, 1, True)]
    # 4 is within the gap of the closed [0, 0] but not late itself (4 + 5 + 1 > 6): it starts
    # a session of its own
    assert counts.add("a", None, 4) == []
    assert counts.late_events == 0
    assert counts.add("a", None, 0) == []  # reaches the open [4, 4]: joins it
    assert counts.add("a", None, -6) == []  # -6 + 5 + 1 ≤ 6, and [0, 4] is out of reach
    assert counts.late_events == 1
    assert counts.advance(100) == [R("a", 0, 4, 2, True), R("b", 6, 6, 1, True)]


def test_an_old_event_can_join_an_open_session() -> None:
    counts = WindowedAggregator(SessionWindows(10), aggregates.count(), store={})
    counts.add("a", None, 100)
    counts.add("b", None, 105)
    # its own session [92, 92] would be closed (92 + 11 ≤ 105), but it reaches [100, 100]
    assert counts.add("a", None, 92) == [R("a", 92, 100, 2)]
    assert counts.late_events == 0
