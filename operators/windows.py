"""Window definitions: which windows an event time belongs to, and when each window closes.

Users give times in seconds (floats); definitions keep integer milliseconds, and event
timestamps are integer milliseconds. Four kinds, after Kafka Streams:

``tumbling(size)``
    Windows ``[k*size, (k+1)*size)``: every event is in exactly one.
``hopping(size, step)``
    Windows ``[k*step, k*step + size)``: an event is in ``ceil(size/step)`` of them. For a
    timestamp ≥ 0, windows that would start before 0 are skipped (as Kafka Streams does), so a
    stream's first windows do not reach back before the epoch; a negative timestamp (before
    1970) gets every window that contains it.
``sliding(size)``
    Kafka Streams' ``SlidingWindows.ofTimeDifferenceAndGrace``: windows are inclusive at both
    ends, ``[start, end]`` with ``end - start == size``, and exist only where records are. For
    the records ``R`` of a key the windows are ``[x-size, x]`` for every ``x`` in ``R`` (the
    window ending at the record) and ``[x+1, x+1+size]`` for every ``x`` in ``R`` with another
    record in ``(x, x+1+size]`` (the window starting just after it). A window's aggregate
    covers every record of the key with ``start ≤ t ≤ end``. Starts may be negative (Kafka
    Streams folds those records into ``[0, size]`` instead).
``session(gap)``
    Per key, events at most ``gap`` apart (inclusive, as in Kafka Streams) form one session
    ``[first_t, last_t]``; an event that bridges two sessions merges them.

Closing. A window closes once the watermark (the largest event time seen in the partition)
reaches its *horizon* plus ``grace``: the horizon is the first time no event can belong to
the window any more: ``end`` for tumbling and hopping (``end`` is exclusive), ``end + 1`` for
sliding (``end`` is inclusive), ``last_t + gap + 1`` for sessions. So ``close_ms(end)`` is
``end + grace``, ``end + 1 + grace`` and ``end + gap + 1 + grace``. This matches Kafka Streams,
which keeps a window open while ``end + grace > stream time`` (tumbling, hopping) and while
``end ≥ stream time - grace`` (sliding; sessions with ``end + gap``).

Retention. A closed window stays queryable for ``retention_ms`` more (the default: one window
size, or one gap for sessions); it is deleted when the watermark reaches
``close_ms(end) + retention_ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import WindowError

__all__ = [
    "HoppingWindows",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WindowDefinition",
    "hopping",
    "session",
    "sliding",
    "tumbling",
]


def _check_ms(kind: str, name: str, value_ms: int, *, least_ms: int) -> None:
    if value_ms < least_ms:
        floor = "≥ 1 ms" if least_ms else "≥ 0"
        raise WindowError(f"{kind} windows: {name} must be {floor}, got {value_ms} ms")


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Windows ``[k*size_ms, (k+1)*size_ms)``; see the module docstring for closing."""

    size_ms: int
    grace_ms: int = 0
    retention_ms: int | None = None  # None: size_ms

    def __post_init__(self) -> None:
        _check_ms("tumbling", "size", self.size_ms, least_ms=1)
        _check_ms("tumbling", "grace", self.grace_ms, least_ms=0)
        if self.retention_ms is None:
            object.__setattr__(self, "retention_ms", self.size_ms)
        else:
            _check_ms("tumbling", "retention", self.retention_ms, least_ms=0)

    def assign(self, timestamp_ms: int) -> list[tuple[int, int]]:
        """The one window ``(start_ms, end_ms)`` holding ``timestamp_ms`` (end exclusive)."""
        start_ms = timestamp_ms - timestamp_ms % self.size_ms
        return [(start_ms, start_ms + self.size_ms)]

    def close_ms(self, end_ms: int) -> int:
        return end_ms + self.grace_ms


@dataclass(frozen=True, slots=True)
class HoppingWindows:
    """Windows ``[k*step_ms, k*step_ms + size_ms)``; see the module docstring."""

    size_ms: int
    step_ms: int
    grace_ms: int = 0
    retention_ms: int | None = None  # None: size_ms

    def __post_init__(self) -> None:
        _check_ms("hopping", "size", self.size_ms, least_ms=1)
        _check_ms("hopping", "step", self.step_ms, least_ms=1)
        if self.step_ms > self.size_ms:
            raise WindowError(
                f"hopping windows: step ({self.step_ms} ms) must be ≤ size ({self.size_ms} ms),"
                " or events between windows would belong to none"
            )
        _check_ms("hopping", "grace", self.grace_ms, least_ms=0)
        if self.retention_ms is None:
            object.__setattr__(self, "retention_ms", self.size_ms)
        else:
            _check_ms("hopping", "retention", self.retention_ms, least_ms=0)

    def assign(self, timestamp_ms: int) -> list[tuple[int, int]]:
        """Every window ``(start_ms, end_ms)`` holding ``timestamp_ms``, by start (end
        exclusive); for ``timestamp_ms ≥ 0`` only windows starting at 0 or later."""
        step_ms = self.step_ms
        first_ms = ((timestamp_ms - self.size_ms) // step_ms + 1) * step_ms
        if timestamp_ms >= 0 and first_ms < 0:
            first_ms = 0
        last_ms = timestamp_ms - timestamp_ms % step_ms
        return [(s, s + self.size_ms) for s in range(first_ms, last_ms + 1, step_ms)]

    def close_ms(self, end_ms: int) -> int:
        return end_ms + self.grace_ms


@dataclass(frozen=True, slots=True)
class SlidingWindows:
    """Kafka Streams' sliding windows ``[start, start + size_ms]``; see the module docstring."""

    size_ms: int
    grace_ms: int = 0
    retention_ms: int | None = None  # None: size_ms

    def __post_init__(self) -> None:
        _check_ms("sliding", "size", self.size_ms, least_ms=1)
        _check_ms("sliding", "grace", self.grace_ms, least_ms=0)
        if self.retention_ms is None:
            object.__setattr__(self, "retention_ms", self.size_ms)
        else:
            _check_ms("sliding", "retention", self.retention_ms, least_ms=0)

    def close_ms(self, end_ms: int) -> int:
        return end_ms + 1 + self.grace_ms


@dataclass(frozen=True, slots=True)
class SessionWindows:
    """Sessions of events at most ``gap_ms`` apart; see the module docstring."""

    gap_ms: int
    grace_ms: int = 0
    retention_ms: int | None = None  # None: gap_ms

    def __post_init__(self) -> None:
        _check_ms("session", "gap", self.gap_ms, least_ms=1)
        _check_ms("session", "grace", self.grace_ms, least_ms=0)
        if self.retention_ms is None:
            object.__setattr__(self, "retention_ms", self.gap_ms)
        else:
            _check_ms("session", "retention", self.retention_ms, least_ms=0)

    def close_ms(self, end_ms: int) -> int:
        return end_ms + self.gap_ms + 1 + self.grace_ms


WindowDefinition = TumblingWindows | HoppingWindows | SlidingWindows | SessionWindows


def _ms(kind: str, name: str, seconds: float) -> int:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise WindowError(f"{kind} windows: {name} must be a finite number of seconds")
    return round(seconds * 1000)


def _retention_ms(kind: str, retention: float | None) -> int | None:
    return None if retention is None else _ms(kind, "retention", retention)


def tumbling(size: float, *, grace: float = 0.0, retention: float | None = None) -> TumblingWindows:
    """Tumbling windows of ``size`` seconds; late events are accepted ``grace`` seconds after a
    window ends; a closed window stays queryable ``retention`` seconds (default: ``size``).

    >>> tumbling(10).assign(12_345)
    [(10000, 20000)]
    """
    return TumblingWindows(
        _ms("tumbling", "size", size), _ms("tumbling", "grace", grace),
        _retention_ms("tumbling", retention),
    )


def hopping(
    size: float, step: float, *, grace: float = 0.0, retention: float | None = None
) -> HoppingWindows:
    """Windows of ``size`` seconds starting every ``step`` seconds (``step ≤ size``).

    >>> hopping(10, 5).assign(12_345)
    [(5000, 15000), (10000, 20000)]
    """
    return HoppingWindows(
        _ms("hopping", "size", size), _ms("hopping", "step", step),
        _ms("hopping", "grace", grace), _retention_ms("hopping", retention),
    )


def sliding(size: float, *, grace: float = 0.0, retention: float | None = None) -> SlidingWindows:
    """Kafka Streams' sliding windows: every distinct set of records at most ``size``
    seconds apart gets a window."""
    return SlidingWindows(
        _ms("sliding", "size", size), _ms("sliding", "grace", grace),
        _retention_ms("sliding", retention),
    )


def session(gap: float, *, grace: float = 0.0, retention: float | None = None) -> SessionWindows:
    """Session windows: a key's events at most ``gap`` seconds apart form one session."""
    return SessionWindows(
        _ms("session", "gap", gap), _ms("session", "grace", grace),
        _retention_ms("session", retention),
    )
