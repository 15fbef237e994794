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

    "__stream_time__"           → int, the partition's stream time (ms)
    ("L", key, t, seq)          → [matched, value]: a buffered left event
    ("R", key, t, seq)          → [matched, value]: a buffered right event

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

import bisect
import heapq
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from .errors import JoinError
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
Buffered = tuple[int, Any, Held]  # (timestamp_ms, seq, held), sorted per (tag, key)


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


_TAGS: Final = {"left": LEFT_TAG, "right": RIGHT_TAG}


def side_tag(side: str) -> str:
    if side == "left":
        return LEFT_TAG
    if side == "right":
        return RIGHT_TAG
    raise JoinError(f'a join side is "left" or "right", not {side!r}')


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
        # Per side (by tag): how far back and ahead its partners' times go, when its window
        # closes past its time, and whether it comes out alone if it never joined.
        self._back = {LEFT_TAG: before_ms, RIGHT_TAG: after_ms}
        self._ahead = {LEFT_TAG: after_ms, RIGHT_TAG: before_ms}
        self._close_after = {tag: max(ahead, 0) + grace_ms for tag, ahead in self._ahead.items()}
        self._alone = {LEFT_TAG: how in ("left", "outer"), RIGHT_TAG: how == "outer"}
        self._store = store
        # (tag, key) → its buffered events, by (time, seq): the only copy in memory.
        self._buffered: dict[tuple[str, Hashable], list[Buffered]] = {}
        self._timers: dict[int, list[EntryKey]] = {}  # close time → entries
        self._timer_heap: list[int] = []  # one entry per distinct time
        self._stream_time_ms = NO_TIME
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
        tag = _TAGS.get(side) or side_tag(side)
        self.events += 1
        close_ms = timestamp_ms + self._close_after[tag]
        stream_time_ms = self._stream_time_ms
        if timestamp_ms > stream_time_ms:  # never late: its window closes after its time
            stream_time_ms = self._stream_time_ms = timestamp_ms
            self._store[STREAM_TIME_KEY] = timestamp_ms
        elif stream_time_ms > close_ms:
            self.late_events += 1
            return []
        rows = self._pairs(tag, key, value, timestamp_ms)
        entry = (tag, key, timestamp_ms, seq)
        bucket = self._buffered.get((tag, key))
        if bucket is None:
            bucket = self._buffered[(tag, key)] = []
        index = bisect.bisect_left(bucket, (timestamp_ms, seq))
        if index < len(bucket) and bucket[index][1] == seq and bucket[index][0] == timestamp_ms:
            held = bucket[index][2]  # processed again (a replay): it keeps its match
            held[0] = held[0] or bool(rows)
            held[1] = value
        else:
            held = [bool(rows), value]
            bucket.insert(index, (timestamp_ms, seq, held))
            self._schedule(close_ms + 1, entry)
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
        self._store[STREAM_TIME_KEY] = stream_time_ms
        rows = self._close_due()
        self.rows += len(rows)
        return rows

    def _pairs(self, tag: str, key: Hashable, value: Any, timestamp_ms: int) -> list[JoinRow]:
        other = RIGHT_TAG if tag == LEFT_TAG else LEFT_TAG
        bucket = self._buffered.get((other, key))
        if not bucket:
            return []
        low = bisect.bisect_left(bucket, (timestamp_ms - self._back[tag],))
        high = bisect.bisect_left(bucket, (timestamp_ms + self._ahead[tag] + 1,))
        if low == high:
            return []
        rows = []
        mark = self._alone[other]
        left = tag == LEFT_TAG
        for partner_ms, seq, held in bucket[low:high]:
            at_ms = timestamp_ms if timestamp_ms > partner_ms else partner_ms
            if left:
                rows.append(JoinRow(key, value, held[1], at_ms))
            else:
                rows.append(JoinRow(key, held[1], value, at_ms))
            if mark and not held[0]:
                held[0] = True
                self._store[(other, key, partner_ms, seq)] = held
        return rows

    # -- closing ---------------------------------------------------------------------------

    def _schedule(self, time_ms: int, entry: EntryKey) -> None:
        entries = self._timers.get(time_ms)
        if entries is None:
            self._timers[time_ms] = [entry]
            heapq.heappush(self._timer_heap, time_ms)
        else:
            entries.append(entry)

    def _close_due(self) -> list[JoinRow]:
        rows = []
        heap, stream_time_ms = self._timer_heap, self._stream_time_ms
        while heap and heap[0] <= stream_time_ms:
            for entry in self._timers.pop(heapq.heappop(heap)):
                tag, key, timestamp_ms, seq = entry
                bucket = self._buffered.get((tag, key))
                if not bucket:
                    continue
                index = bisect.bisect_left(bucket, (timestamp_ms, seq))
                if index == len(bucket) or bucket[index][:2] != (timestamp_ms, seq):
                    continue
                held = bucket.pop(index)[2]
                if not bucket:
                    del self._buffered[(tag, key)]
                del self._store[entry]
                if not held[0] and self._alone[tag]:
                    if tag == LEFT_TAG:
                        rows.append(JoinRow(key, held[1], None, timestamp_ms))
                    else:
                        rows.append(JoinRow(key, None, held[1], timestamp_ms))
        return rows

    # -- recovery --------------------------------------------------------------------------

    def restore(self) -> None:
        """Rebuild the buffers and timers from the store alone (after recovery)."""
        self._buffered.clear()
        self._timers.clear()
        self._timer_heap.clear()
        stored = self._store.get(STREAM_TIME_KEY)
        self._stream_time_ms = NO_TIME if stored is None else int(stored)
        entries = []
        for raw_key, held in self._store.items():
            if raw_key == STREAM_TIME_KEY:
                continue
            entry = freeze(raw_key)
            if not _is_entry(entry):
                raise JoinError(f"stream join store: unexpected key {raw_key!r}; is the store "
                                "shared with something else?")
            entries.append((entry, held))
        for entry, held in entries:
            tag, key, timestamp_ms, seq = entry
            self._buffered.setdefault((tag, key), []).append(
                (timestamp_ms, seq, [bool(held[0]), held[1]]))
            self._schedule(timestamp_ms + self._close_after[tag] + 1, entry)
        for bucket in self._buffered.values():
            bucket.sort(key=lambda buffered: buffered[:2])

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> JoinStatistics:
        buffered = sum(len(bucket) for bucket in self._buffered.values())
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
