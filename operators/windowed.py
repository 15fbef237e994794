"""WindowedAggregator: one windowed aggregation over one partition. Pure logic: no I/O, no
asyncio, no clock; the caller feeds events and, for idle partitions, watermarks.

The watermark is the largest event time seen in the partition (or given to
:meth:`~WindowedAggregator.advance`); it never moves back. A window closes when the
watermark reaches ``window.close_ms(end)`` (see :mod:`.windows`: ``end + grace`` for
tumbling and hopping windows). An event is *late* when every window it would go into is
closed: it changes nothing, is counted in ``late_events`` and handed to ``on_late``.

``emit="current"``: :meth:`~WindowedAggregator.add` returns the new value of every window
the event changed or created, by ``(end_ms, start_ms)`` (for sessions: the merged session,
which supersedes those it covers; they are not reported removed). Closing emits nothing
more. ``emit="final"``: each window is returned once, when it closes, with ``final=True``.
Windows closing together come out by ``(end_ms, start_ms, key)``.

A closed window stays in the store, queryable, until the watermark reaches
``close_ms(end) + retention_ms``; then it is deleted, and as a late event never creates a
window, it does not come back. Everything lives in the store (layout in
:mod:`.window_state`), so after a restart :meth:`~WindowedAggregator.restore` carries on
exactly where the store left off.

>>> from streamer.operators import aggregates, tumbling
>>> counts = WindowedAggregator(tumbling(10), aggregates.count(), emit="final", store={})
>>> counts.add("k", "a", 1_000), counts.add("k", "b", 9_000)
([], [])
>>> counts.add("k", "c", 10_500)
[Result(key='k', start_ms=0, end_ms=10000, value=2, final=True)]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from .aggregates import Aggregate
from .errors import WindowError
from .fixed_windows import FixedWindowsEngine, TumblingEngine
from .session_windows import SessionEngine
from .sliding_windows import SlidingEngine
from .window_state import (
    CLOSE,
    EXPIRE,
    MISSING,
    RECORD_TAG,
    WATERMARK_KEY,
    WINDOW_TAG,
    KeyValueStore,
    RecordKey,
    WindowEngine,
    WindowKey,
    WindowState,
)
from .windows import (
    HoppingWindows,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowDefinition,
)

__all__ = ["Emit", "OnLate", "Result", "WindowedAggregator", "WindowedStatistics"]

logger = logging.getLogger("streamer.operators")

Emit = Literal["current", "final"]
OnLate = Callable[[Any, Any, int], None]  # (key, value, timestamp_ms)

_NO_WATERMARK: Final = -(2**63)  # below any timestamp: nothing has been seen yet

_KINDS: Final = {
    TumblingWindows: "tumbling",
    HoppingWindows: "hopping",
    SlidingWindows: "sliding",
    SessionWindows: "session",
}


@dataclass(frozen=True, slots=True)
class Result:
    """A window's value. ``end_ms`` is exclusive for tumbling and hopping windows, and
    inclusive for sliding windows and sessions (their last event's time)."""

    key: Any
    start_ms: int
    end_ms: int
    value: Any
    final: bool


@dataclass(frozen=True, slots=True)
class WindowedStatistics:
    kind: str  # tumbling, hopping, sliding, session
    emit: Emit
    watermark_ms: int | None  # None until the first event or advance
    events: int
    late_events: int
    open_windows: int
    closed_windows: int  # closed, still queryable until they expire
    finals_emitted: int


class WindowedAggregator:
    """One windowed aggregation (``window`` × ``aggregate``) over one partition's events,
    with its state in ``store``. Keys must be hashable: str, bytes, int, float, None, or
    tuples of those (a list key read back from the store becomes a tuple)."""

    def __init__(
        self,
        window: WindowDefinition,
        aggregate: Aggregate,
        *,
        store: KeyValueStore,
        emit: Emit = "current",
        on_late: OnLate | None = None,
    ) -> None:
        kind = _KINDS.get(type(window))
        if kind is None:
            raise WindowError(f"not a window definition: {window!r}")
        if emit not in ("current", "final"):
            raise WindowError(f'emit is "current" or "final", got {emit!r}')
        if kind in ("sliding", "session") and not aggregate.mergeable:
            raise WindowError(
                f"{kind} windows combine partial aggregates, and {aggregate.name} has no"
                " merge: pass merge= to aggregate(), or override Aggregate.merge"
            )
        self.window = window
        self.aggregate = aggregate
        self.emit: Emit = emit
        self.on_late = on_late
        self.kind = kind
        self.late_events = 0
        self.events = 0
        self.finals_emitted = 0
        self._final = emit == "final"
        assert window.retention_ms is not None, "definitions fill in their default retention"
        self._retention_ms = window.retention_ms
        self._end_exclusive = kind in ("tumbling", "hopping")
        self._store = store
        self._state = WindowState(store)
        self._timer_heap = self._state.timer_heap
        self._engine = self._new_engine()
        self._watermark_ms: int = _NO_WATERMARK

    def _new_engine(self) -> WindowEngine:
        window, aggregate, state = self.window, self.aggregate, self._state
        if isinstance(window, TumblingWindows):
            return TumblingEngine(window, aggregate, state)
        if isinstance(window, HoppingWindows):
            return FixedWindowsEngine(window, aggregate, state)
        if isinstance(window, SlidingWindows):
            return SlidingEngine(window, aggregate, state)
        return SessionEngine(window, aggregate, state)

    @property
    def watermark_ms(self) -> int | None:
        return None if self._watermark_ms == _NO_WATERMARK else self._watermark_ms

    # -- events --------------------------------------------------------------------------

    def add(self, key: Hashable, value: Any, timestamp_ms: int) -> list[Result]:
        """Fold one event in; see the module docstring for what comes back."""
        self.events += 1
        if timestamp_ms > self._watermark_ms:
            self._watermark_ms = timestamp_ms
            self._store[WATERMARK_KEY] = timestamp_ms
        touched = self._engine.apply(key, value, timestamp_ms, self._watermark_ms)
        results: list[Result]
        if touched is None:
            self._late(key, value, timestamp_ms)
            results = []
        elif self._final:
            results = []
        else:
            result, open_ = self.aggregate.result, self._state.open
            results = [Result(key, w[2], w[3], result(open_[w]), False) for w in touched]
        if self._timer_heap and self._timer_heap[0] <= self._watermark_ms:
            results += self._run_timers()
        return results

    def advance(self, watermark_ms: int) -> list[Result]:
        """Move the watermark to ``watermark_ms`` without an event (an idle partition); a
        watermark behind the current one changes nothing. Returns the windows that close, in
        ``emit="final"`` mode."""
        if watermark_ms <= self._watermark_ms:
            return []
        self._watermark_ms = watermark_ms
        self._store[WATERMARK_KEY] = watermark_ms
        return self._run_timers()

    def _late(self, key: Any, value: Any, timestamp_ms: int) -> None:
        self.late_events += 1
        if self.on_late is not None:
            self.on_late(key, value, timestamp_ms)
        else:
            logger.debug(
                "late event dropped: key=%r timestamp_ms=%d watermark_ms=%d",
                key, timestamp_ms, self._watermark_ms,
            )

    def _run_timers(self) -> list[Result]:
        finals: list[Result] = []
        state, result = self._state, self.aggregate.result
        for time_ms, action, store_key in state.due(self._watermark_ms):
            if action == CLOSE:
                acc = state.close(store_key, time_ms + self._retention_ms)
                if acc is MISSING:
                    continue  # a session merged into another since
                self._engine.closed(store_key)
                if self._final:
                    finals.append(
                        Result(store_key[1], store_key[2], store_key[3], result(acc), True)
                    )
            elif action == EXPIRE:
                state.expire(store_key)
            else:
                self._engine.forget(store_key)
        self.finals_emitted += len(finals)
        return _in_emit_order(finals)

    # -- recovery --------------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild the in-memory indexes from the store alone (after recovery); windows and
        record accumulators past their time are deleted from the store on the way."""
        self._state.reset()
        self._engine = self._new_engine()
        stored = self._store.get(WATERMARK_KEY)
        self._watermark_ms = _NO_WATERMARK if stored is None else int(stored)
        watermark_ms = self._watermark_ms
        for raw_key, acc in list(self._store.items()):
            if raw_key == WATERMARK_KEY:
                continue
            store_key = _freeze(raw_key)
            if _is_window_key(store_key):
                window = store_key
                close_ms = self.window.close_ms(window[3])
                if watermark_ms < close_ms:
                    self._state.restore_open(window, acc, close_ms)
                    self._engine.restore_open(window)
                elif watermark_ms < close_ms + self._retention_ms:
                    self._state.restore_closed(window, close_ms + self._retention_ms)
                else:
                    del self._store[window]
            elif self.kind == "sliding" and _is_record_key(store_key):
                self._engine.restore_record(store_key, acc, watermark_ms)
            else:
                raise WindowError(
                    f"{self.kind} window store: unexpected key {raw_key!r}; is the store"
                    " shared with something else?"
                )

    # -- queries ---------------------------------------------------------------------------

    def windows(self, key: Hashable) -> list[Result]:
        """Every window of ``key`` still in the store, open (``final=False``) or closed
        (``final=True``), by start."""
        state, result = self._state, self.aggregate.result
        found = sorted(state.by_key.get(key, ()), key=lambda w: (w[2], w[3]))
        return [
            Result(key, w[2], w[3], result(state.acc_of(w)), w not in state.open) for w in found
        ]

    def get(self, key: Hashable, timestamp_ms: int | None = None, default: Any = None) -> Any:
        """The value of the latest-starting window of ``key`` that holds ``timestamp_ms``
        (default: the watermark), or ``default``; like Faust's ``table[key].current()``."""
        if timestamp_ms is None:
            if self._watermark_ms == _NO_WATERMARK:
                return default
            timestamp_ms = self._watermark_ms
        last_ms = timestamp_ms + 1 if self._end_exclusive else timestamp_ms
        holding = [
            w for w in self._state.by_key.get(key, ()) if w[2] <= timestamp_ms and last_ms <= w[3]
        ]
        if not holding:
            return default
        latest = max(holding, key=lambda w: (w[2], w[3]))
        return self.aggregate.result(self._state.acc_of(latest))

    def statistics(self) -> WindowedStatistics:
        return WindowedStatistics(
            kind=self.kind,
            emit=self.emit,
            watermark_ms=self.watermark_ms,
            events=self.events,
            late_events=self.late_events,
            open_windows=len(self._state.open),
            closed_windows=self._state.closed_windows,
            finals_emitted=self.finals_emitted,
        )

    def __repr__(self) -> str:
        return f"<WindowedAggregator {self.kind} {self.aggregate.name} emit={self.emit}>"


def _in_emit_order(results: list[Result]) -> list[Result]:
    if len(results) > 1:
        try:
            results.sort(key=lambda r: (r.end_ms, r.start_ms, r.key))
        except TypeError:  # keys of types that do not compare (str and int): by type first
            results.sort(
                key=lambda r: (r.end_ms, r.start_ms, type(r.key).__name__, repr(r.key))
            )
    return results


def _freeze(value: Any) -> Any:
    """A store that round-trips keys through JSON gives tuples back as lists."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(item) for item in value)
    return value


def _is_window_key(store_key: Any) -> TypeGuard[WindowKey]:
    return (
        isinstance(store_key, tuple) and len(store_key) == 4 and store_key[0] == WINDOW_TAG
        and isinstance(store_key[2], int) and isinstance(store_key[3], int)
    )


def _is_record_key(store_key: Any) -> TypeGuard[RecordKey]:
    return (
        isinstance(store_key, tuple) and len(store_key) == 3 and store_key[0] == RECORD_TAG
        and isinstance(store_key[2], int)
    )
