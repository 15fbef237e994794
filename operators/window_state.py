"""The windows of one windowed aggregation: accumulators, the store they are written to, and
the timers that close and expire them.

Store layout (keys are tuples of plain values, values plain JSON)::

    "__watermark__"                      → int, the partition's watermark (ms)
    ("w", key, start_ms, end_ms)         → accumulator of that window (open or closed)
    ("r", key, timestamp_ms)             → accumulator of the records at that time
                                           (sliding windows only: new windows start from them)

Open windows' accumulators are also kept in memory (``open``), so events never read the
store; every change is written through. Whether a window is open, closed or expired follows
from its end and the watermark alone, so all of this can be rebuilt from the store.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Final, Protocol

from .timers import Timers

__all__ = [
    "CLOSE",
    "EXPIRE",
    "FORGET",
    "MISSING",
    "RECORD_TAG",
    "WATERMARK_KEY",
    "WINDOW_TAG",
    "KeyValueStore",
    "RecordKey",
    "WindowEngine",
    "WindowKey",
    "WindowState",
]

WATERMARK_KEY: Final = "__watermark__"
WINDOW_TAG: Final = "w"
RECORD_TAG: Final = "r"

WindowKey = tuple[str, Hashable, int, int]  # (WINDOW_TAG, key, start_ms, end_ms)
RecordKey = tuple[str, Hashable, int]  # (RECORD_TAG, key, timestamp_ms)

# Timer actions, run once the watermark reaches their time.
CLOSE: Final = 0  # an open window stops taking events (and is emitted, in "final" mode)
EXPIRE: Final = 1  # a closed window leaves the store
FORGET: Final = 2  # a record accumulator (sliding) can no longer start or join a window


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()  # accumulators may be None, so absence needs its own value


class KeyValueStore(Protocol):
    """What a windowed aggregation needs of its store: a plain ``dict`` will do."""

    def get(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: Any, value: Any, /) -> None: ...

    def __delitem__(self, key: Any, /) -> None: ...

    def __contains__(self, key: object, /) -> bool: ...

    def items(self) -> Iterable[tuple[Any, Any]]: ...


class WindowState:
    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self.open: dict[WindowKey, Any] = {}  # open window → its accumulator
        self.by_key: dict[Hashable, set[WindowKey]] = {}  # key → its windows in the store
        self.closed_windows = 0  # closed, kept in the store until they expire
        self._timers = Timers[tuple[int, Any]]()  # time → (action, store key)
        self.timer_heap = self._timers.heap  # the aggregator peeks at the next time here

    def reset(self) -> None:
        self.open.clear()
        self.by_key.clear()
        self.closed_windows = 0
        self._timers.clear()

    def schedule(self, time_ms: int, action: int, store_key: Any) -> None:
        self._timers.schedule(time_ms, (action, store_key))

    def due(self, watermark_ms: int) -> Iterator[tuple[int, int, Any]]:
        """``(time_ms, action, store_key)`` of every timer up to ``watermark_ms``, by time;
        timers scheduled meanwhile at or before ``watermark_ms`` come out too."""
        for time_ms, (action, store_key) in self._timers.due(watermark_ms):
            yield time_ms, action, store_key

    def create(self, window: WindowKey, acc: Any, close_ms: int) -> None:
        self.open[window] = acc
        self.store[window] = acc
        windows = self.by_key.get(window[1])
        if windows is None:
            self.by_key[window[1]] = {window}
        else:
            windows.add(window)
        self.schedule(close_ms, CLOSE, window)

    def write(self, window: WindowKey, acc: Any) -> None:
        self.open[window] = acc
        self.store[window] = acc

    def discard(self, window: WindowKey) -> Any:
        """Remove an open window that was merged into another (sessions); its close timer
        finds it gone. Returns its accumulator."""
        acc = self.open.pop(window)
        del self.store[window]
        self._unindex(window)
        return acc

    def close(self, window: WindowKey, expire_ms: int) -> Any:
        """Close an open window: its accumulator, or MISSING if it was merged away."""
        acc = self.open.pop(window, MISSING)
        if acc is not MISSING:
            self.closed_windows += 1
            self.schedule(expire_ms, EXPIRE, window)
        return acc

    def expire(self, window: WindowKey) -> None:
        self.closed_windows -= 1
        if window in self.store:
            del self.store[window]
        self._unindex(window)

    def restore_open(self, window: WindowKey, acc: Any, close_ms: int) -> None:
        self.by_key.setdefault(window[1], set()).add(window)
        self.open[window] = acc
        self.schedule(close_ms, CLOSE, window)

    def restore_closed(self, window: WindowKey, expire_ms: int) -> None:
        self.by_key.setdefault(window[1], set()).add(window)
        self.closed_windows += 1
        self.schedule(expire_ms, EXPIRE, window)

    def acc_of(self, window: WindowKey) -> Any:
        acc = self.open.get(window, MISSING)
        return self.store.get(window) if acc is MISSING else acc

    def _unindex(self, window: WindowKey) -> None:
        windows = self.by_key.get(window[1])
        if windows is not None:
            windows.discard(window)
            if not windows:
                del self.by_key[window[1]]


class WindowEngine(Protocol):
    """The part of a windowed aggregation that depends on the kind of window."""

    def apply(
        self, key: Hashable, value: Any, timestamp_ms: int, watermark_ms: int
    ) -> list[WindowKey] | None:
        """Fold one event into its open windows (creating them as needed): the windows
        changed or created, by (end, start), or None if the event is late for all of them.
        ``watermark_ms`` already counts the event."""
        ...

    def closed(self, window: WindowKey) -> None:
        """``window`` just closed: drop it from the engine's own indexes."""
        ...

    def forget(self, record: RecordKey) -> None:
        """A FORGET timer fired for ``record``."""
        ...

    def restore_open(self, window: WindowKey) -> None:
        """Index an open window found in the store."""
        ...

    def restore_record(self, record: RecordKey, acc: Any, watermark_ms: int) -> None:
        """Take back a record accumulator found in the store (or delete it if done)."""
        ...
