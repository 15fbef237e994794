"""WindowJoiner: the windowed (and interval) join of two streams over one partition, as pure
logic: no I/O, no asyncio, no clock. The caller feeds each side's events in the order it
processes them and, for idle partitions, stream times.

Windows. A left event at ``t`` joins every right event of the same key with
``t - before_ms ≤ t_right ≤ t + after_ms`` (both ends inclusive; Kafka Streams'
``JoinWindows``, and Flink's interval join with ``lower = -before``, ``upper = after``);
``before_ms + after_ms`` must be ≥ 0, either may be negative. Seen from a right event at
``t``, its partners are the left events in ``[t - after_ms, t + before_ms]``.

Stream time is the largest event time seen in the partition, over both sides (or given to
:meth:`~WindowJoiner.advance`); it never moves back. An event's window *closes* once stream
time passes ``t + reach + grace_ms``, where ``reach`` is how far ahead its partners go
(``after_ms`` for a left event, ``before_ms`` for a right one; 0 if that is negative, as an
event cannot close before its own time).

- An event is **late** when its window is already closed as it arrives (stream time, counting
  the event, is past ``t + reach + grace_ms``): it is dropped and counted in ``late_events``.
- Otherwise it joins, at once, every event of the other side whose window is still open and
  whose time is in its range: one :class:`JoinRow` per pair, ``(left, right)``, timed
  ``max(t_left, t_right)``, in the other side's (time, seq) order. It then waits, buffered,
  until its own window closes.
- When a window closes, its event leaves the buffer (and the store). With ``how="left"`` a
  left event that never joined comes out then, once, as ``(left, None)`` timed ``t``; with
  ``how="outer"`` a right one too, as ``(None, right)``; ``"inner"`` emits only pairs. Rows
  of windows closing together come out by close time, after the pairs of the event that
  moved stream time.

So a pair comes out when its second event arrives while the first one's window is open, and
an event that came out unmatched never joins later: its window closed, and any event that
could still join it would be late. Events whose value is None are the caller's to skip
(Kafka Streams ignores them in stream-stream joins).

Every change is written through to ``store``; in memory are the buffered events (values
included, so events never read the store) and the close timers, all rebuilt by
:meth:`~WindowJoiner.restore`. Layout (keys are tuples of plain values)::

    "__stream_time__"           → int, the partition's stream time (ms), see below
    ("L", key, t, seq)          → [matched, value]: a buffered left event
    ("R", key, t, seq)          → [matched, value]: a buffered right event

Stream time is the largest time of an accepted event, and every accepted event stays in the
store until its window closes; so it is written only when windows close (and on
:meth:`~WindowJoiner.advance`), and restore takes the larger of it and the buffered events'
times. That saves a write per event in order.

``seq`` tells events of one side with the same key and time apart and is the same when an
event is processed again (the caller passes the record's offset): a replay after a crash
overwrites its own entry (keeping ``matched``) instead of adding a second one.

>>> joins = WindowJoiner(before_ms=10, after_ms=10, store={})
>>> joins.add("left", "k", "a", 100, seq=0)
[]
>>> joins.add("right", "k", "b", 105, seq=0)
[JoinRow(key='k', left='a', right='b', timestamp_ms=105)]
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from .errors import JoinError
from .timers import Timers
from .window_state import KeyValueStore

__all__ = [
    "LEFT_TAG",
    "RIGHT_TAG",
    "STREAM_TIME_KEY",
    "JoinHow",
    "JoinRow",
    "JoinSide",
    "JoinStatistics",
    "WindowJoiner",
    "check_how",
    "side_tag",
]

JoinHow = Literal["inner", "left", "outer"]
JoinSide = Literal["left", "right"]

STREAM_TIME_KEY: Final = "__stream_time__"
LEFT_TAG: Final = "L"
RIGHT_TAG: Final = "R"
NO_TIME: Final = -(2**63)  # below any timestamp: nothing has been seen yet

EntryKey = tuple[str, Hashable, int, Any]  # (tag, key, timestamp_ms, seq)
Held = list[Any]  # [matched, value]: what the store holds for a buffered event
_row = tuple.__new__  # a JoinRow without NamedTuple's __new__ frame (hot path)


class JoinRow(NamedTuple):
    """One output row: ``left`` or ``right`` is None for an unmatched event."""

    key: Any
    left: Any
    right: Any
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class JoinStatistics:
    stream_time_ms: int | None  # None until the first event or advance
    events: int
    late_events: int
    buffered_events: int  # both sides, windows still open
    rows: int


def check_how(how: str, allowed: tuple[str, ...], what: str) -> None:
    if how not in allowed:
        listed = ", ".join(f'"{h}"' for h in allowed)
        raise JoinError(f"{what}: how is one of {listed}, not {how!r}")


def side_tag(side: str) -> str:
    if side == "left":
        return LEFT_TAG
    if side == "right":
        return RIGHT_TAG
    raise JoinError(f'a join side is "left" or "right", not {side!r}')


class _Side:
    """One side's settings and buffer, seen from an event of that side."""

    __slots__ = ("ahead", "alone", "back", "buffer", "close_after", "left", "other", "tag")

    def __init__(self, tag: str, back: int, ahead: int, grace_ms: int, alone: bool) -> None:
        self.tag = tag
        self.left = tag == LEFT_TAG
        self.back = back  # its partners' times go from t - back ...
        self.ahead = ahead  # ... to t + ahead
        self.close_after = max(ahead, 0) + grace_ms  # its window closes past t + this
        self.alone = alone  # an event that never joined comes out alone
        # key → [times, items]: its buffered events by (time, seq), times (ints, for
        # bisect) and (seq, held) apart. The only copy in memory.
        self.buffer: dict[Hashable, list[list[Any]]] = {}
        self.other: _Side = self


class WindowJoiner:
    """The windowed join of one partition; see the module docstring."""

    def __init__(
        self,
        *,
        before_ms: int,
        after_ms: int,
        grace_ms: int = 0,
        how: JoinHow = "inner",
        store: KeyValueStore,
    ) -> None:
        check_how(how, ("inner", "left", "outer"), "stream join")
        for name, value in (("before", before_ms), ("after", after_ms), ("grace", grace_ms)):
            if not isinstance(value, int):
                raise JoinError(f"stream join: {name}_ms must be an int, got {value!r}")
        if before_ms + after_ms < 0:
            raise JoinError(
                f"stream join: the window [t - {before_ms} ms, t + {after_ms} ms] is empty: "
                "before + after (or upper - lower) must be ≥ 0"
            )
        if grace_ms < 0:
            raise JoinError(f"stream join: grace must be ≥ 0, got {grace_ms} ms")
        self.how: JoinHow = how
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.grace_ms = grace_ms
        left = _Side(LEFT_TAG, before_ms, after_ms, grace_ms, how in ("left", "outer"))
        right = _Side(RIGHT_TAG, after_ms, before_ms, grace_ms, how == "outer")
        left.other, right.other = right, left
        self._by_name = {"left": left, "right": right}
        self._sides = {LEFT_TAG: left, RIGHT_TAG: right}
        self._store = store
        self._timers = Timers[EntryKey]()  # close time → entries
        self._timer_heap = self._timers.heap
        self._stream_time_ms = NO_TIME
        self._stored_time_ms = NO_TIME  # what the store has under STREAM_TIME_KEY
        self.events = 0
        self.late_events = 0
        self.rows = 0

    @property
    def stream_time_ms(self) -> int | None:
        return None if self._stream_time_ms == NO_TIME else self._stream_time_ms

    # -- events --------------------------------------------------------------------------

    def add(self, side: JoinSide, key: Hashable, value: Any, timestamp_ms: int, *, seq: Any
            ) -> list[JoinRow]:
        """One event of ``side``: the rows it makes (pairs, then windows it closed)."""
        mine = self._by_name.get(side)
        if mine is None:
            raise JoinError(f'a join side is "left" or "right", not {side!r}')
        self.events += 1
        close_ms = timestamp_ms + mine.close_after
        stream_time_ms = self._stream_time_ms
        if timestamp_ms > stream_time_ms:  # never late: its window closes after its time
            stream_time_ms = self._stream_time_ms = timestamp_ms
        elif stream_time_ms > close_ms:
            self.late_events += 1
            return []
        rows = self._pairs(mine, key, value, timestamp_ms)
        tag = mine.tag
        entry = (tag, key, timestamp_ms, seq)
        bucket = mine.buffer.get(key)
        if bucket is None:
            held = [bool(rows), value]
            mine.buffer[key] = [[timestamp_ms], [(seq, held)]]
            self._timers.schedule(close_ms + 1, entry)
        else:
            times, items = bucket
            if timestamp_ms > times[-1]:  # in order: the common case
                index = len(times)
            else:
                index = bisect_left(times, timestamp_ms)
                while index < len(times) and times[index] == timestamp_ms \
                        and items[index][0] < seq:
                    index += 1
            if index < len(times) and times[index] == timestamp_ms \
                    and items[index][0] == seq:
                held = items[index][1]  # processed again (a replay): it keeps its match
                held[0] = held[0] or bool(rows)
                held[1] = value
            else:
                held = [bool(rows), value]
                times.insert(index, timestamp_ms)
                items.insert(index, (seq, held))
                self._timers.schedule(close_ms + 1, entry)
        self._store[entry] = held
        if self._timer_heap and self._timer_heap[0] <= stream_time_ms:
            rows += self._close_due()
        self.rows += len(rows)
        return rows

    def advance(self, stream_time_ms: int) -> list[JoinRow]:
        """Move stream time to ``stream_time_ms`` without an event (an idle partition): the
        rows of the windows that close. A time behind the current one changes nothing."""
        if stream_time_ms <= self._stream_time_ms:
            return []
        self._stream_time_ms = stream_time_ms
        self._store_stream_time()
        rows = self._close_due()
        self.rows += len(rows)
        return rows

    def _pairs(self, mine: _Side, key: Hashable, value: Any, timestamp_ms: int
               ) -> list[JoinRow]:
        other = mine.other
        bucket = other.buffer.get(key)
        if bucket is None:
            return []
        times, items = bucket
        low = bisect_left(times, timestamp_ms - mine.back)
        high = bisect_right(times, timestamp_ms + mine.ahead, low)
        if low == high:
            return []
        rows = []
        mark = other.alone
        left = mine.left
        for index in range(low, high):
            partner_ms = times[index]
            seq, held = items[index]
            at_ms = timestamp_ms if timestamp_ms > partner_ms else partner_ms
            if left:
                rows.append(_row(JoinRow, (key, value, held[1], at_ms)))
            else:
                rows.append(_row(JoinRow, (key, held[1], value, at_ms)))
            if mark and not held[0]:
                held[0] = True
                self._store[(other.tag, key, partner_ms, seq)] = held
        return rows

    # -- closing ---------------------------------------------------------------------------

    def _close_due(self) -> list[JoinRow]:
        rows = []
        sides = self._sides
        closed = False
        for _, entry in self._timers.due(self._stream_time_ms):
            tag, key, timestamp_ms, seq = entry
            side = sides[tag]
            bucket = side.buffer.get(key)
            if bucket is None:
                continue
            times, items = bucket
            index = bisect_left(times, timestamp_ms)
            while index < len(times) and times[index] == timestamp_ms \
                    and items[index][0] != seq:
                index += 1
            if index == len(times) or times[index] != timestamp_ms:
                continue
            held = items.pop(index)[1]
            del times[index]
            if not times:
                del side.buffer[key]
            del self._store[entry]
            closed = True
            if not held[0] and side.alone:
                if side.left:
                    rows.append(_row(JoinRow, (key, held[1], None, timestamp_ms)))
                else:
                    rows.append(_row(JoinRow, (key, None, held[1], timestamp_ms)))
        if closed:
            # Stream time is stored only as events that showed it leave the buffer: restore
            # takes the larger of it and the buffered events' times.
            self._store_stream_time()
        return rows

    def _store_stream_time(self) -> None:
        if self._stored_time_ms != self._stream_time_ms:
            self._stored_time_ms = self._stream_time_ms
            self._store[STREAM_TIME_KEY] = self._stream_time_ms

    # -- recovery --------------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild the buffers and timers from the store alone (after recovery)."""
        for side in self._sides.values():
            side.buffer.clear()
        self._timers.clear()
        stored = self._store.get(STREAM_TIME_KEY)
        self._stored_time_ms = NO_TIME if stored is None else int(stored)
        stream_time_ms = self._stored_time_ms
        entries = []
        for raw_key, held in self._store.items():
            if raw_key == STREAM_TIME_KEY:
                continue
            entry = freeze(raw_key)
            if not _is_entry(entry):
                raise JoinError(f"stream join store: unexpected key {raw_key!r}; is the store "
                                "shared with something else?")
            entries.append((entry, held))
        entries.sort(key=lambda found: (found[0][2], found[0][3]))  # by (time, seq)
        for entry, held in entries:
            tag, key, timestamp_ms, seq = entry
            side = self._sides[tag]
            bucket = side.buffer.get(key)
            if bucket is None:
                bucket = side.buffer[key] = [[], []]
            bucket[0].append(timestamp_ms)
            bucket[1].append((seq, [bool(held[0]), held[1]]))
            self._timers.schedule(timestamp_ms + side.close_after + 1, entry)
            stream_time_ms = max(stream_time_ms, timestamp_ms)
        self._stream_time_ms = stream_time_ms

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> JoinStatistics:
        buffered = sum(len(bucket[0]) for side in self._sides.values()
                       for bucket in side.buffer.values())
        return JoinStatistics(self.stream_time_ms, self.events, self.late_events, buffered,
                              self.rows)

    def __repr__(self) -> str:
        return (f"<WindowJoiner {self.how} before={self.before_ms}ms after={self.after_ms}ms "
                f"grace={self.grace_ms}ms>")


def freeze(value: Any) -> Any:
    """A store that round-trips keys through JSON gives tuples back as lists."""
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, tuple) and len(entry) == 4 and entry[0] in (LEFT_TAG, RIGHT_TAG)
        and isinstance(entry[2], int)
    )
