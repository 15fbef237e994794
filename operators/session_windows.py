"""Session windows, defined in :mod:`.windows`.

An event at ``t`` (gap ``G``, grace ``g``, watermark ``W`` counting the event) reaches every
*open* session ``[start, end]`` of its key with ``start - G ≤ t ≤ end + G``. It merges them
(with the aggregate's ``merge``) and itself into one session; if it reaches none it starts
the session ``[t, t]``, unless that one would be closed already (``W ≥ t + G + 1 + g``):
then the event is late.

Closed sessions never change: an event within the gap of a closed session but not late
starts (or joins) another, open session beside it. That is the price of emitting each
session once; Kafka Streams instead merges into a closed session and emits the merged one
again.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable
from typing import Any

from .aggregates import Aggregate
from .window_state import WINDOW_TAG, RecordKey, WindowKey, WindowState
from .windows import SessionWindows

__all__ = ["SessionEngine"]


class SessionEngine:
    def __init__(
        self, definition: SessionWindows, aggregate: Aggregate, state: WindowState
    ) -> None:
        self._gap_ms = definition.gap_ms
        self._definition = definition
        self._aggregate = aggregate
        self._state = state
        # key → its open sessions by start; open sessions of a key are more than a gap
        # apart, so an event reaches at most two of them.
        self._sessions: dict[Hashable, list[WindowKey]] = {}

    def apply(
        self, key: Hashable, value: Any, timestamp_ms: int, watermark_ms: int
    ) -> list[WindowKey] | None:
        gap_ms = self._gap_ms
        sessions = self._sessions.get(key, [])
        reached = [s for s in sessions if s[2] - gap_ms <= timestamp_ms <= s[3] + gap_ms]
        state = self._state
        aggregate = self._aggregate
        if len(reached) == 1 and reached[0][2] <= timestamp_ms <= reached[0][3]:
            window = reached[0]  # inside a session: it keeps its bounds
            state.write(window, aggregate.add(state.open[window], value))
            return [window]
        if not reached and watermark_ms >= self._definition.close_ms(timestamp_ms):
            return None
        acc = aggregate.init()
        start_ms = end_ms = timestamp_ms
        for session in reached:
            acc = aggregate.merge(acc, state.discard(session))
            sessions.remove(session)
            start_ms = min(start_ms, session[2])
            end_ms = max(end_ms, session[3])
        window = (WINDOW_TAG, key, start_ms, end_ms)
        state.create(window, aggregate.add(acc, value), self._definition.close_ms(end_ms))
        insort(sessions, window, key=_start_ms)
        self._sessions[key] = sessions
        return [window]

    def closed(self, window: WindowKey) -> None:
        sessions = self._sessions[window[1]]
        sessions.remove(window)
        if not sessions:
            del self._sessions[window[1]]

    def forget(self, record: RecordKey) -> None:
        raise AssertionError(f"sessions keep no record accumulators: {record!r}")

    def restore_open(self, window: WindowKey) -> None:
        insort(self._sessions.setdefault(window[1], []), window, key=_start_ms)

    def restore_record(self, record: RecordKey, acc: Any, watermark_ms: int) -> None:
        raise AssertionError(f"sessions keep no record accumulators: {record!r}")


def _start_ms(window: WindowKey) -> int:
    return window[2]
