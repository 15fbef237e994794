"""AsofJoiner: the as-of join of two streams over one partition, as pure logic (quixstreams'
``join_asof``).

Each left event comes out at once, with the right value of its key that was current at its
time: the right event with the greatest time ``≤ t_left`` among those processed so far (of
several with that time, the one processed last). Right events only update that history;
they emit nothing. ``how="inner"`` drops a left event with no such right value,
``how="left"`` gives it ``None``. A right event whose value is None is a tombstone: from its
time on the key has no value (an inner join drops left events that find it).

History is bounded by ``grace_ms``: a right value whose time is more than ``grace_ms`` behind
stream time (the largest event time seen in the partition, over both sides, counting the
event being processed) is forgotten, except the latest of its key, which stays until a newer
one replaces it. A lookup never sees a forgotten value, whether or not it is deleted yet, so
the result does not depend on when the store is cleaned. A right event that arrives already
forgotten (older than ``stream time - grace_ms`` and not its key's latest) changes nothing
and is counted in ``late_events``. Rows are timed ``t_left``.

Layout (keys are tuples of plain values)::

    "__stream_time__"        → int, the partition's stream time (ms)
    ("R", key, t)            → [value]: the right value of ``key`` from ``t`` on

In memory are only the times of each key's values and the timers that forget them; values
are read from the store when a left event needs one.

>>> asof = AsofJoiner(grace_ms=1_000, how="left", store={})
>>> asof.add("right", "EURUSD", 1.08, 100), asof.add("left", "EURUSD", "buy", 250)
([], [JoinRow(key='EURUSD', left='buy', right=1.08, timestamp_ms=250)])
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from typing import Any, Final, Literal

from .errors import JoinError
from .stream_joins import (
    NO_TIME,
    RIGHT_TAG,
    STREAM_TIME_KEY,
    JoinRow,
    JoinSide,
    JoinStatistics,
    check_how,
    freeze,
    side_tag,
)
from .timers import Timers
from .window_state import KeyValueStore

__all__ = ["AsofHow", "AsofJoiner"]

AsofHow = Literal["inner", "left"]
_FORGET_CHECK: Final = 1  # ms past ``t + grace`` at which a value stops being visible


class AsofJoiner:
    """The as-of join of one partition; see the module docstring."""

    def __init__(self, *, grace_ms: int, how: AsofHow = "inner", store: KeyValueStore) -> None:
        check_how(how, ("inner", "left"), "as-of join")
        if not isinstance(grace_ms, int) or grace_ms < 0:
            raise JoinError(f"as-of join: grace must be ≥ 0 ms, got {grace_ms!r}")
        self.how: AsofHow = how
        self.grace_ms = grace_ms
        self._store = store
        self._times: dict[Hashable, list[int]] = {}  # key → times of its values, sorted
        self._timers = Timers[Hashable]()  # time → keys with values to forget by then
        self._timer_heap = self._timers.heap
        self._stream_time_ms = NO_TIME
        self.events = 0
        self.late_events = 0
        self.rows = 0

    @property
    def stream_time_ms(self) -> int | None:
        return None if self._stream_time_ms == NO_TIME else self._stream_time_ms

    def add(self, side: JoinSide, key: Hashable, value: Any, timestamp_ms: int, *,
            seq: Any = None) -> list[JoinRow]:
        """One event of ``side``: a left event's row (if any); a right event makes none.
        ``seq`` is accepted for symmetry with :class:`WindowJoiner` and not needed."""
        tag = side_tag(side)
        self.events += 1
        if timestamp_ms > self._stream_time_ms:
            self._stream_time_ms = timestamp_ms
            self._store[STREAM_TIME_KEY] = timestamp_ms
        if self._timer_heap and self._timer_heap[0] <= self._stream_time_ms:
            self._forget_due()
        if tag == RIGHT_TAG:
            self._remember(key, value, timestamp_ms)
            return []
        found = self._lookup(key, timestamp_ms)
        if found is None:
            if self.how == "inner":
                return []
            right = None
        else:
            right = found[0]
            if right is None and self.how == "inner":
                return []
        self.rows += 1
        return [JoinRow(key, value, right, timestamp_ms)]

    def _visible_from_ms(self) -> int:
        return self._stream_time_ms - self.grace_ms

    def _lookup(self, key: Hashable, timestamp_ms: int) -> list[Any] | None:
        """``[value]`` of the value current at ``timestamp_ms``, or None."""
        times = self._times.get(key)
        if not times:
            return None
        index = bisect.bisect_right(times, timestamp_ms) - 1
        if index < 0:
            return None
        found_ms = times[index]
        if found_ms < self._visible_from_ms() and index != len(times) - 1:
            return None  # forgotten: too old, and not the key's latest
        held: list[Any] | None = self._store.get((RIGHT_TAG, key, found_ms))
        return held

    def _remember(self, key: Hashable, value: Any, timestamp_ms: int) -> None:
        times = self._times.setdefault(key, [])
        newest = not times or timestamp_ms >= times[-1]
        if timestamp_ms < self._visible_from_ms() and not newest:
            self.late_events += 1
            return
        self._store[(RIGHT_TAG, key, timestamp_ms)] = [value]
        index = bisect.bisect_left(times, timestamp_ms)
        if index == len(times) or times[index] != timestamp_ms:
            times.insert(index, timestamp_ms)
            self._schedule(key, timestamp_ms)
        self._forget_old(key, times)

    def _forget_old(self, key: Hashable, times: list[int]) -> None:
        """Delete ``key``'s forgotten values (all but the latest, once too old)."""
        visible_from_ms = self._visible_from_ms()
        while len(times) > 1 and times[0] < visible_from_ms:
            del self._store[(RIGHT_TAG, key, times.pop(0))]

    def _schedule(self, key: Hashable, timestamp_ms: int) -> None:
        self._timers.schedule(timestamp_ms + self.grace_ms + _FORGET_CHECK, key)

    def _forget_due(self) -> None:
        for _, key in self._timers.due(self._stream_time_ms):
            times = self._times.get(key)
            if times:
                self._forget_old(key, times)

    def restore(self) -> None:
        """Rebuild the per-key times and the timers from the store alone."""
        self._times.clear()
        self._timers.clear()
        stored = self._store.get(STREAM_TIME_KEY)
        self._stream_time_ms = NO_TIME if stored is None else int(stored)
        for raw_key, _ in list(self._store.items()):
            if raw_key == STREAM_TIME_KEY:
                continue
            entry = freeze(raw_key)
            if not (isinstance(entry, tuple) and len(entry) == 3 and entry[0] == RIGHT_TAG
                    and isinstance(entry[2], int)):
                raise JoinError(f"as-of join store: unexpected key {raw_key!r}; is the store "
                                "shared with something else?")
            self._times.setdefault(entry[1], []).append(entry[2])
        for key, times in self._times.items():
            times.sort()
            for timestamp_ms in times:
                self._schedule(key, timestamp_ms)

    def statistics(self) -> JoinStatistics:
        held = sum(len(times) for times in self._times.values())
        return JoinStatistics(self.stream_time_ms, self.events, self.late_events, held,
                              self.rows)

    def __repr__(self) -> str:
        return f"<AsofJoiner {self.how} grace={self.grace_ms}ms>"
