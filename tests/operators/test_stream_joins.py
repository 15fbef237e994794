"""WindowJoiner and AsofJoiner against brute-force relational models written apart from them.

The models see the whole input at once. For the windowed join: stream time after each step
is the running maximum; an event is late when stream time (counting it) is past its close
time ``t + max(reach, 0) + grace``; a pair of accepted events of one key whose times are in
range comes out at the step of the second one, unless the first one's window closed at an
earlier step; an accepted event of an emitting side with no pair at all comes out alone at
the step its window closes. For the as-of join: each left event, with the right value of the
greatest time ≤ its own among earlier right events (last processed on ties), unless that
value is both more than grace behind stream time and not its key's latest.

Random inputs: keys a–c over 1–3 partitions, times around a rising mark (out of order, late,
long jumps), idle advances, replays of earlier events, restores mid-stream.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.operators import AsofJoiner, JoinError, JoinRow, WindowJoiner

from .oracle import JsonStore
from .strategies import FAR_FUTURE_MS, partition_of

EXAMPLES = settings(max_examples=300, deadline=None)
Row = tuple[Any, Any, Any, int]  # (key, left, right, timestamp_ms)


@dataclass(frozen=True)
class Step:
    """An event (``side`` set) or an idle advance of stream time (``side`` None)."""

    side: str | None
    key: str
    value: Any
    timestamp_ms: int
    seq: int


@st.composite
def steps(draw: st.DrawFn, max_steps: int = 40, tombstones: bool = False) -> list[Step]:
    count = draw(st.integers(0, max_steps))
    scale = draw(st.sampled_from([1, 3, 10]))
    keys = st.sampled_from("abc"[: draw(st.integers(1, 3))])
    values = st.one_of(st.none(), st.integers(0, 9)) if tombstones else st.integers(0, 9)
    mark = draw(st.integers(0, 10 * scale))
    moves = st.one_of(st.integers(-2 * scale, scale), st.integers(-12 * scale, -2 * scale),
                      st.integers(15 * scale, 60 * scale))
    found: list[Step] = []
    for seq in range(count):
        time_ms = max(0, mark + draw(moves))
        mark = max(mark, time_ms)
        kind = draw(st.sampled_from(["left", "right", "left", "right", "advance"]))
        if kind == "advance":
            found.append(Step(None, "", None, time_ms, seq))
        else:
            found.append(Step(kind, draw(keys), draw(values), time_ms, seq))
    return found


def stream_times(run: list[Step]) -> list[int]:
    times, now = [], -(2**63)
    for step in run:
        now = max(now, step.timestamp_ms)
        times.append(now)
    return times


# -- the windowed join's model ---------------------------------------------------------------


def window_oracle(run: list[Step], before_ms: int, after_ms: int, grace_ms: int, how: str
                  ) -> list[Counter[Row]]:
    """One multiset of rows per step, and one for a final advance to the far future."""
    far_ms = FAR_FUTURE_MS + max((step.timestamp_ms for step in run), default=0)
    run = [*run, Step(None, "", None, far_ms, -1)]
    now = stream_times(run)
    ahead = {"left": after_ms, "right": before_ms}
    alone = {"left": how in ("left", "outer"), "right": how == "outer"}

    def close_ms(i: int) -> int:
        return run[i].timestamp_ms + max(ahead[run[i].side or ""], 0) + grace_ms

    accepted = [i for i, s in enumerate(run) if s.side is not None and now[i] <= close_ms(i)]
    closed_at = {i: next((j for j in range(i + 1, len(run)) if now[j] > close_ms(i)), None)
                 for i in accepted}
    out: list[Counter[Row]] = [Counter() for _ in run]
    paired: set[int] = set()
    lefts = [i for i in accepted if run[i].side == "left"]
    rights = [i for i in accepted if run[i].side == "right"]
    for x in lefts:
        for y in rights:
            left, right = run[x], run[y]
            if left.key != right.key:
                continue
            if not -before_ms <= right.timestamp_ms - left.timestamp_ms <= after_ms:
                continue
            first, second = min(x, y), max(x, y)
            closed = closed_at[first]
            if closed is not None and closed < second:
                continue  # the first one's window closed before the second one came
            paired |= {x, y}
            out[second][(left.key, left.value, right.value,
                         max(left.timestamp_ms, right.timestamp_ms))] += 1
    for x in accepted:
        step, closed = run[x], closed_at[x]
        if x in paired or not alone[step.side or ""] or closed is None:
            continue
        row = (step.key, step.value, None) if step.side == "left" else (step.key, None,
                                                                         step.value)
        out[closed][(*row, step.timestamp_ms)] += 1
    return out


def feed(joiner: WindowJoiner | AsofJoiner, run: list[Step], *, finish: bool = True
         ) -> list[Counter[Row]]:
    outputs = []
    for step in run:
        if step.side is None:
            rows = joiner.advance(step.timestamp_ms) if isinstance(joiner, WindowJoiner) else []
        else:
            rows = joiner.add(step.side, step.key, step.value, step.timestamp_ms,  # type: ignore[arg-type]
                              seq=step.seq)
        outputs.append(as_counter(rows))
    if finish:
        final = joiner.advance(FAR_FUTURE_MS) if isinstance(joiner, WindowJoiner) else []
        outputs.append(as_counter(final))
    return outputs


def as_counter(rows: list[JoinRow]) -> Counter[Row]:
    return Counter((r.key, r.left, r.right, r.timestamp_ms) for r in rows)


windows = st.one_of(
    st.tuples(st.integers(0, 30), st.integers(0, 30)),  # join(): before, after ≥ 0
    st.tuples(st.integers(-20, 30), st.integers(-20, 30)).filter(lambda w: w[0] + w[1] >= 0),
)
graces = st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 60))
hows = st.sampled_from(["inner", "left", "outer"])


def by_partition(run: list[Step], partitions: int) -> list[list[Step]]:
    """Events to their key's partition; idle advances to every partition."""
    parts: list[list[Step]] = [[] for _ in range(partitions)]
    for step in run:
        for index, part in enumerate(parts):
            if step.side is None or partition_of(step.key, partitions) == index:
                part.append(step)
    return parts


@EXAMPLES
@given(run=steps(), window=windows, grace_ms=graces, how=hows,
       partitions=st.integers(1, 3))
def test_window_join_matches_the_relational_model(
    run: list[Step], window: tuple[int, int], grace_ms: int, how: str, partitions: int
) -> None:
    before_ms, after_ms = window
    for part in by_partition(run, partitions):
        joiner = WindowJoiner(before_ms=before_ms, after_ms=after_ms, grace_ms=grace_ms,
                              how=how, store=JsonStore())  # type: ignore[arg-type]
        assert feed(joiner, part) == window_oracle(part, before_ms, after_ms, grace_ms, how)
        late = sum(1 for i, s in enumerate(part) if s.side is not None
                   and stream_times(part)[i] > s.timestamp_ms
                   + max(after_ms if s.side == "left" else before_ms, 0) + grace_ms)
        assert joiner.late_events == late
        assert joiner.statistics().buffered_events == 0  # the far-future advance closed all


@EXAMPLES
@given(run=steps(), window=windows, grace_ms=graces, how=hows, data=st.data())
def test_window_join_restored_mid_stream_carries_on_identically(
    run: list[Step], window: tuple[int, int], grace_ms: int, how: str, data: st.DataObject
) -> None:
    before_ms, after_ms = window
    options: dict[str, Any] = dict(before_ms=before_ms, after_ms=after_ms, grace_ms=grace_ms,
                                   how=how)
    expected = feed(WindowJoiner(**options, store=JsonStore()), run)
    cut = data.draw(st.integers(0, len(run)))
    store = JsonStore()
    before = WindowJoiner(**options, store=store)
    head = feed(before, run[:cut], finish=False)
    copy = store.copy()
    after = WindowJoiner(**options, store=copy)
    after.restore()
    assert copy.decoded() == store.decoded()
    restored, original = after.statistics(), before.statistics()
    assert (restored.stream_time_ms, restored.buffered_events) == (
        original.stream_time_ms, original.buffered_events)
    assert head + feed(after, run[cut:]) == expected
    assert copy.decoded() in ({}, {"__stream_time__": FAR_FUTURE_MS})


@EXAMPLES
@given(run=steps(), window=windows, grace_ms=graces, how=hows, data=st.data())
def test_replayed_events_only_repeat_pairs(
    run: list[Step], window: tuple[int, int], grace_ms: int, how: str, data: st.DataObject
) -> None:
    """At least once: events processed again (same seq, as after a crash) add nothing but
    copies of pairs; every row of the model still comes out, non-matches exactly once."""
    before_ms, after_ms = window
    events = [s for s in run if s.side is not None]
    replayed = list(run)
    for step in data.draw(st.lists(st.sampled_from(events), max_size=8) if events
                          else st.just([])):
        position = data.draw(st.integers(replayed.index(step) + 1, len(replayed)))
        replayed.insert(position, step)
    joiner = WindowJoiner(before_ms=before_ms, after_ms=after_ms, grace_ms=grace_ms, how=how,
                          store=JsonStore())  # type: ignore[arg-type]
    got = sum(feed(joiner, replayed), Counter())
    expected = sum(window_oracle(run, before_ms, after_ms, grace_ms, how), Counter())
    assert not expected - got, "a row of the model is missing"
    extra = got - expected
    assert all(row in expected and None not in row[1:3] for row in extra), extra


# -- the windowed join by hand -----------------------------------------------------------------


def rows(joiner: WindowJoiner, side: str, key: str, value: Any, time_ms: int, seq: int
         ) -> list[Row]:
    return [(r.key, r.left, r.right, r.timestamp_ms)
            for r in joiner.add(side, key, value, time_ms, seq=seq)]  # type: ignore[arg-type]


def test_window_bounds_are_inclusive_and_asymmetric() -> None:
    joiner = WindowJoiner(before_ms=10, after_ms=5, grace_ms=100, store={})
    for seq, time_ms in enumerate((89, 90, 105, 106)):
        assert rows(joiner, "right", "k", time_ms, time_ms, seq) == []
    assert rows(joiner, "left", "k", "l", 100, 9) == [("k", "l", 90, 100), ("k", "l", 105, 105)]


def test_left_join_emits_a_non_match_only_once_its_window_closed() -> None:
    joiner = WindowJoiner(before_ms=10, after_ms=10, grace_ms=5, how="left", store={})
    assert rows(joiner, "left", "k", "alone", 100, 0) == []
    assert rows(joiner, "right", "other", "x", 115, 1) == []  # stream time 115 = 100 + 10 + 5
    assert rows(joiner, "right", "other", "y", 116, 2) == [("k", "alone", None, 100)]
    assert joiner.advance(10_000) == []  # right events of a left join never come out alone


def test_outer_join_flushes_on_advance_and_a_late_event_is_dropped() -> None:
    joiner = WindowJoiner(before_ms=0, after_ms=0, grace_ms=0, how="outer", store={})
    assert rows(joiner, "right", "k", "r", 50, 0) == []
    assert [(r.left, r.right) for r in joiner.advance(51)] == [(None, "r")]
    assert rows(joiner, "left", "k", "late", 50, 1) == []
    assert joiner.late_events == 1


def test_an_interval_entirely_in_the_past_still_joins_in_order_events() -> None:
    """interval_join(lower=-10, upper=-5): a left event's partners came 5–10 ms before it;
    its window cannot close before its own time, so arriving in order it is not late."""
    joiner = WindowJoiner(before_ms=10, after_ms=-5, grace_ms=0, how="left", store={})
    assert rows(joiner, "right", "k", "r", 92, 0) == []
    assert rows(joiner, "left", "k", "l", 100, 1) == [("k", "l", "r", 100)]
    assert rows(joiner, "left", "k", "m", 103, 2) == []  # 92 < 103 - 10
    assert [(r.left, r.right) for r in joiner.advance(104)] == [("m", None)]


def test_a_replayed_event_keeps_its_match() -> None:
    joiner = WindowJoiner(before_ms=5, after_ms=50, grace_ms=0, how="left", store={})
    rows(joiner, "left", "k", "l", 100, 0)
    assert rows(joiner, "right", "k", "r", 101, 0) == [("k", "l", "r", 101)]
    rows(joiner, "right", "other", "x", 107, 1)  # r's window (before=5) closes
    assert rows(joiner, "left", "k", "l", 100, 0) == []  # replayed: no partner left now
    assert joiner.advance(1_000) == []  # still matched: no ("l", None)


@pytest.mark.parametrize(("options", "message"), [
    (dict(before_ms=1, after_ms=1, how="full"), 'how is one of "inner", "left", "outer"'),
    (dict(before_ms=-5, after_ms=2), "window [t - -5 ms, t + 2 ms] is empty"),
    (dict(before_ms=1, after_ms=1, grace_ms=-1), "grace must be ≥ 0"),
    (dict(before_ms=1.5, after_ms=1), "before_ms must be an int"),
])
def test_window_join_refuses_what_cannot_work(options: dict[str, Any], message: str) -> None:
    with pytest.raises(JoinError, match=re.escape(message)):
        WindowJoiner(**options, store={})


def test_window_join_refuses_a_store_it_did_not_write() -> None:
    joiner = WindowJoiner(before_ms=1, after_ms=1, store={("w", "k", 0, 10): 3})
    with pytest.raises(JoinError, match="unexpected key"):
        joiner.restore()


def test_an_unknown_side_is_refused() -> None:
    with pytest.raises(JoinError, match='"left" or "right"'):
        WindowJoiner(before_ms=1, after_ms=1, store={}).add("up", "k", 1, 0, seq=0)  # type: ignore[arg-type]


# -- as-of ----------------------------------------------------------------------------------


def asof_oracle(run: list[Step], grace_ms: int, how: str) -> list[Counter[Row]]:
    now = stream_times(run)
    out: list[Counter[Row]] = []
    for i, step in enumerate(run):
        found: Counter[Row] = Counter()
        out.append(found)
        if step.side != "left":
            continue
        earlier = [j for j in range(i) if run[j].side == "right" and run[j].key == step.key]
        candidates = [j for j in earlier if run[j].timestamp_ms <= step.timestamp_ms]
        value = None
        if candidates:
            chosen = max(candidates, key=lambda j: (run[j].timestamp_ms, j))
            chosen_ms = run[chosen].timestamp_ms
            latest_ms = max(run[j].timestamp_ms for j in earlier)
            if chosen_ms >= now[i] - grace_ms or chosen_ms == latest_ms:
                value = run[chosen].value
            elif how == "inner":
                continue
        if value is None and how == "inner":
            continue
        found[(step.key, step.value, value, step.timestamp_ms)] += 1
    return out


asof_graces = st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 200))


@EXAMPLES
@given(run=steps(tombstones=True), grace_ms=asof_graces,
       how=st.sampled_from(["inner", "left"]), partitions=st.integers(1, 3))
def test_asof_join_matches_the_model(run: list[Step], grace_ms: int, how: str,
                                     partitions: int) -> None:
    for part in by_partition([s for s in run if s.side is not None], partitions):
        joiner = AsofJoiner(grace_ms=grace_ms, how=how, store=JsonStore())  # type: ignore[arg-type]
        assert feed(joiner, part, finish=False) == asof_oracle(part, grace_ms, how)


@EXAMPLES
@given(run=steps(tombstones=True), grace_ms=asof_graces,
       how=st.sampled_from(["inner", "left"]), data=st.data())
def test_asof_join_restored_mid_stream_carries_on_identically(
    run: list[Step], grace_ms: int, how: str, data: st.DataObject
) -> None:
    run = [s for s in run if s.side is not None]
    expected = feed(AsofJoiner(grace_ms=grace_ms, how=how, store=JsonStore()),  # type: ignore[arg-type]
                    run, finish=False)
    cut = data.draw(st.integers(0, len(run)))
    store = JsonStore()
    head = feed(AsofJoiner(grace_ms=grace_ms, how=how, store=store), run[:cut],  # type: ignore[arg-type]
                finish=False)
    after = AsofJoiner(grace_ms=grace_ms, how=how, store=store.copy())  # type: ignore[arg-type]
    after.restore()
    assert head + feed(after, run[cut:], finish=False) == expected


def test_asof_takes_the_last_processed_of_equal_times_and_honours_tombstones() -> None:
    asof = AsofJoiner(grace_ms=1_000, how="left", store={})
    asof.add("right", "k", "first", 10)
    asof.add("right", "k", "second", 10)
    assert [r.right for r in asof.add("left", "k", "l", 10)] == ["second"]
    assert [r.right for r in asof.add("left", "k", "l", 9)] == [None]  # nothing before 10
    asof.add("right", "k", None, 20)  # deleted from 20 on
    assert [r.right for r in asof.add("left", "k", "l", 25)] == [None]
    assert [r.right for r in asof.add("left", "k", "l", 15)] == ["second"]
    inner = AsofJoiner(grace_ms=1_000, how="inner", store={})
    inner.add("right", "k", None, 0)
    assert inner.add("left", "k", "l", 5) == []


def test_asof_forgets_old_values_but_keeps_each_keys_latest() -> None:
    store: dict[Any, Any] = {}
    asof = AsofJoiner(grace_ms=10, store=store)
    asof.add("right", "k", "old", 0)
    asof.add("right", "k", "new", 5)
    asof.add("right", "quiet", "only", 0)
    asof.add("left", "other", "x", 100)  # stream time 100: "old" is forgotten, the latest kept
    assert [r.right for r in asof.add("left", "k", "l", 3)] == []
    assert [r.right for r in asof.add("left", "k", "l", 50)] == ["new"]
    assert [r.right for r in asof.add("left", "quiet", "l", 100)] == ["only"]
    assert ("R", "k", 0) not in store and ("R", "k", 5) in store
    asof.add("right", "k", "too late", 1)
    assert asof.late_events == 1


def test_asof_refuses_outer_and_a_negative_grace() -> None:
    with pytest.raises(JoinError, match='how is one of "inner", "left"'):
        AsofJoiner(grace_ms=0, how="outer", store={})  # type: ignore[arg-type]
    with pytest.raises(JoinError, match="grace must be ≥ 0"):
        AsofJoiner(grace_ms=-1, store={})
