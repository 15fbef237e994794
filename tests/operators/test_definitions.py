"""Window definitions: seconds to milliseconds, assignment, closing, bad arguments."""

from __future__ import annotations

import doctest

import pytest
import streamer.operators
from streamer.operators import (
    HoppingWindows,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowError,
    aggregates,
    hopping,
    session,
    sliding,
    tumbling,
    windowed,
    windows,
)

from streamer.errors import StreamerError


def test_factories_take_seconds_and_keep_milliseconds() -> None:
    assert tumbling(10) == TumblingWindows(10_000, 0, 10_000)
    assert tumbling(0.25, grace=1.5, retention=60) == TumblingWindows(250, 1_500, 60_000)
    assert hopping(10, 2.5) == HoppingWindows(10_000, 2_500, 0, 10_000)
    assert sliding(5, grace=1) == SlidingWindows(5_000, 1_000, 5_000)
    assert session(30) == SessionWindows(30_000, 0, 30_000)  # retention: one gap
    assert tumbling(0.007).size_ms == 7  # 0.007 * 1000 is 7.000000000000001


def test_tumbling_assign() -> None:
    windows = tumbling(0.01)
    assert windows.assign(0) == [(0, 10)]
    assert windows.assign(9) == [(0, 10)]
    assert windows.assign(10) == [(10, 20)]
    assert windows.assign(-1) == [(-10, 0)]


def test_hopping_assign_skips_windows_before_zero_for_nonnegative_times() -> None:
    windows = hopping(0.01, 0.004)
    assert windows.assign(0) == [(0, 10)]
    assert windows.assign(9) == [(0, 10), (4, 14), (8, 18)]
    assert windows.assign(12) == [(4, 14), (8, 18), (12, 22)]
    assert windows.assign(-3) == [(-12, -2), (-8, 2), (-4, 6)]  # negative times: every window
    assert hopping(0.01, 0.01).assign(15) == tumbling(0.01).assign(15)


def test_close_times() -> None:
    assert TumblingWindows(10, grace_ms=3).close_ms(10) == 13  # [0, 10) takes t ≤ 9
    assert HoppingWindows(10, 5, grace_ms=3).close_ms(15) == 18
    assert SlidingWindows(10, grace_ms=3).close_ms(10) == 14  # [0, 10] takes t = 10
    assert SessionWindows(5, grace_ms=3).close_ms(10) == 19  # 15 still joins [.., 10]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: tumbling(0), "tumbling windows: size must be ≥ 1 ms, got 0 ms"),
        (lambda: tumbling(-1), "size must be ≥ 1 ms"),
        (lambda: tumbling(0.0001), "size must be ≥ 1 ms"),
        (lambda: tumbling(10, grace=-1), "tumbling windows: grace must be ≥ 0, got -1000 ms"),
        (lambda: tumbling(10, retention=-1), "retention must be ≥ 0"),
        (lambda: tumbling(float("nan")), "size must be a finite number of seconds"),
        (lambda: tumbling(float("inf")), "finite"),
        (lambda: hopping(10, 20), "step (20000 ms) must be ≤ size (10000 ms)"),
        (lambda: hopping(10, 0), "hopping windows: step must be ≥ 1 ms"),
        (lambda: hopping(0, 0), "hopping windows: size must be ≥ 1 ms"),
        (lambda: hopping(10, 5, grace=-0.5), "grace must be ≥ 0"),
        (lambda: sliding(0), "sliding windows: size must be ≥ 1 ms"),
        (lambda: sliding(1, grace=-1), "sliding windows: grace must be ≥ 0"),
        (lambda: session(0), "session windows: gap must be ≥ 1 ms"),
        (lambda: session(1, retention=-2), "session windows: retention must be ≥ 0"),
        (lambda: TumblingWindows(0), "size must be ≥ 1 ms"),
    ],
)
def test_bad_arguments(make: object, message: str) -> None:
    with pytest.raises(WindowError) as raised:
        make()  # type: ignore[operator]
    assert message in str(raised.value)
    assert isinstance(raised.value, StreamerError)


@pytest.mark.parametrize(
    "module", [streamer.operators, windows, aggregates, windowed], ids=lambda m: m.__name__
)
def test_docstring_examples(module: object) -> None:
    failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)  # type: ignore[arg-type]
    assert failures == 0
