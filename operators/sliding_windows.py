"""Sliding windows (Kafka Streams' ``SlidingWindows``), defined in :mod:`.windows`.

A record at ``t`` (size ``S``, grace ``G``, watermark ``W`` counting the record):

- is late, and dropped, when ``W ≥ t + S + 1 + G``: then ``[t, t+S]``, the last window that
  could hold it, is closed, and so is every other;
- otherwise it joins every open window holding ``t``, and creates, when open and missing:
  ``[t-S, t]``; ``[t+1, t+1+S]`` if a record lies in it; ``[p+1, p+1+S]`` for each earlier
  record ``p`` with ``p < t ≤ p+1+S``.

A new window starts from the records already in its range. Kafka Streams copies the
aggregate of a neighbouring window, which loses records that came too late for the
neighbour but not for the new window; here each key keeps one accumulator per record time
(``("r", key, t)``) until ``W ≥ t + S + 2 + G`` (when ``[t+1, t+1+S]`` closes), and a new
window merges those of its range. So a window's aggregate is exactly that of the records it
holds that came while it was open, whatever their order; it needs the aggregate's
``merge``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Hashable
from typing import Any

from .aggregates import Aggregate
from .window_state import (
    FORGET,
    MISSING,
    RECORD_TAG,
    WINDOW_TAG,
    RecordKey,
    WindowKey,
    WindowState,
)
from .windows import SlidingWindows

__all__ = ["SlidingEngine"]


class SlidingEngine:
    def __init__(
        self, definition: SlidingWindows, aggregate: Aggregate, state: WindowState
    ) -> None:
        self._definition = definition
        self._size_ms = definition.size_ms
        self._aggregate = aggregate
        self._state = state
        self._starts: dict[Hashable, list[int]] = {}  # key → starts of its open windows
        self._times: dict[Hashable, list[int]] = {}  # key → times of its record accumulators
        self._records: dict[RecordKey, Any] = {}  # record accumulators, as in the store

    def apply(
        self, key: Hashable, value: Any, timestamp_ms: int, watermark_ms: int
    ) -> list[WindowKey] | None:
        size_ms, close_ms = self._size_ms, self._definition.close_ms
        if watermark_ms >= close_ms(timestamp_ms + size_ms):  # [t, t+size] is closed
            return None
        self._add_record(key, value, timestamp_ms)
        state = self._state
        starts = self._starts.get(key, [])
        touched: list[WindowKey] = []
        low = bisect_left(starts, timestamp_ms - size_ms)
        for start_ms in starts[low : bisect_right(starts, timestamp_ms)]:
            window = (WINDOW_TAG, key, start_ms, start_ms + size_ms)
            state.write(window, self._aggregate.add(state.open[window], value))
            touched.append(window)
        for start_ms in self._defined_starts(key, timestamp_ms):
            end_ms = start_ms + size_ms
            window = (WINDOW_TAG, key, start_ms, end_ms)
            if window in state.open or watermark_ms >= close_ms(end_ms):
                continue  # there already, or closed: a closed window is never made
            state.create(window, self._merge_records(key, start_ms), close_ms(end_ms))
            insort(starts, start_ms)
            touched.append(window)
        if starts:
            self._starts[key] = starts
        touched.sort(key=_start_ms)
        return touched

    def _forget_ms(self, timestamp_ms: int) -> int:
        """When the window just after a record closes: the last one it can define."""
        return self._definition.close_ms(timestamp_ms + 1 + self._size_ms)

    def _add_record(self, key: Hashable, value: Any, timestamp_ms: int) -> None:
        record = (RECORD_TAG, key, timestamp_ms)
        acc = self._records.get(record, MISSING)
        if acc is MISSING:
            acc = self._aggregate.init()
            insort(self._times.setdefault(key, []), timestamp_ms)
            self._state.schedule(self._forget_ms(timestamp_ms), FORGET, record)
        acc = self._aggregate.add(acc, value)
        self._records[record] = acc
        self._state.store[record] = acc

    def _defined_starts(self, key: Hashable, timestamp_ms: int) -> list[int]:
        """Starts of the windows that the record at ``timestamp_ms`` defines, alone or with
        the records already there."""
        size_ms = self._size_ms
        times = self._times[key]
        starts = [timestamp_ms - size_ms]  # the window ending at the record
        after = bisect_right(times, timestamp_ms)
        if after < len(times) and times[after] <= timestamp_ms + 1 + size_ms:
            starts.append(timestamp_ms + 1)  # the window just after it holds records
        # the windows just after earlier records p with t - size ≤ p < t (p = t - size - 1
        # would give [t - size, t] again)
        earliest = bisect_left(times, timestamp_ms - size_ms)
        for previous_ms in times[earliest : bisect_left(times, timestamp_ms)]:
            starts.append(previous_ms + 1)
        return starts

    def _merge_records(self, key: Hashable, start_ms: int) -> Any:
        times = self._times[key]
        merge = self._aggregate.merge
        acc = self._aggregate.init()
        end_ms = start_ms + self._size_ms
        for time_ms in times[bisect_left(times, start_ms) : bisect_right(times, end_ms)]:
            acc = merge(acc, self._records[(RECORD_TAG, key, time_ms)])
        return acc

    def closed(self, window: WindowKey) -> None:
        _remove_sorted(self._starts, window[1], window[2])

    def forget(self, record: RecordKey) -> None:
        del self._records[record]
        del self._state.store[record]
        _remove_sorted(self._times, record[1], record[2])

    def restore_open(self, window: WindowKey) -> None:
        insort(self._starts.setdefault(window[1], []), window[2])

    def restore_record(self, record: RecordKey, acc: Any, watermark_ms: int) -> None:
        forget_ms = self._forget_ms(record[2])
        if watermark_ms >= forget_ms:
            del self._state.store[record]
            return
        self._records[record] = acc
        insort(self._times.setdefault(record[1], []), record[2])
        self._state.schedule(forget_ms, FORGET, record)


def _start_ms(window: WindowKey) -> int:
    return window[2]


def _remove_sorted(index: dict[Hashable, list[int]], key: Hashable, time_ms: int) -> None:
    times = index[key]
    del times[bisect_left(times, time_ms)]
    if not times:
        del index[key]
