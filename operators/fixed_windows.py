"""Tumbling and hopping windows: an event's windows follow from its timestamp alone.

An event goes into each of its windows that is still open (``end + grace > watermark``); it
is late only when all of them are closed. A hopping event can so be on time for its later
windows and late for its earlier ones: it counts in the open ones only, and is not reported
late.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .aggregates import Aggregate
from .window_state import MISSING, WINDOW_TAG, RecordKey, WindowKey, WindowState
from .windows import HoppingWindows, TumblingWindows

__all__ = ["FixedWindowsEngine", "TumblingEngine"]


class FixedWindowsEngine:
    """Any windows with an ``assign(timestamp_ms)``; hopping ones in practice."""

    def __init__(
        self, definition: TumblingWindows | HoppingWindows, aggregate: Aggregate,
        state: WindowState,
    ) -> None:
        self._definition = definition
        self._grace_ms = definition.grace_ms
        self._init = aggregate.init
        self._add = aggregate.add
        self._state = state

    def apply(
        self, key: Hashable, value: Any, timestamp_ms: int, watermark_ms: int
    ) -> list[WindowKey] | None:
        state = self._state
        touched: list[WindowKey] = []
        for start_ms, end_ms in self._definition.assign(timestamp_ms):
            close_ms = end_ms + self._grace_ms
            if close_ms <= watermark_ms:
                continue
            window = (WINDOW_TAG, key, start_ms, end_ms)
            acc = state.open.get(window, MISSING)
            if acc is MISSING:
                state.create(window, self._add(self._init(), value), close_ms)
            else:
                state.write(window, self._add(acc, value))
            touched.append(window)
        return touched or None

    def closed(self, window: WindowKey) -> None:
        pass  # no index besides the state's own

    def forget(self, record: RecordKey) -> None:
        raise AssertionError(f"fixed windows keep no record accumulators: {record!r}")

    def restore_open(self, window: WindowKey) -> None:
        pass

    def restore_record(self, record: RecordKey, acc: Any, watermark_ms: int) -> None:
        raise AssertionError(f"fixed windows keep no record accumulators: {record!r}")


class TumblingEngine(FixedWindowsEngine):
    """Hopping's loop made straight: the hot path of a tumbling count."""

    def __init__(
        self, definition: TumblingWindows, aggregate: Aggregate, state: WindowState
    ) -> None:
        super().__init__(definition, aggregate, state)
        self._size_ms = definition.size_ms
        self._open = state.open
        self._store = state.store

    def apply(
        self, key: Hashable, value: Any, timestamp_ms: int, watermark_ms: int
    ) -> list[WindowKey] | None:
        start_ms = timestamp_ms - timestamp_ms % self._size_ms
        end_ms = start_ms + self._size_ms
        close_ms = end_ms + self._grace_ms
        if close_ms <= watermark_ms:
            return None
        window = (WINDOW_TAG, key, start_ms, end_ms)
        acc = self._open.get(window, MISSING)
        if acc is MISSING:
            self._state.create(window, self._add(self._init(), value), close_ms)
        else:
            acc = self._add(acc, value)
            self._open[window] = acc
            self._store[window] = acc
        return [window]
