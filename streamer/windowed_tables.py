"""Faust-style windowed tables: a table whose values live per time window::

    views = app.table("views", default=int).tumbling(60, expires=3600)

    @app.agent(page_views)                      # keyed by page
    async def count(stream):
        async for view in stream:
            views[view["page"]] += 1            # the window of the event's time
            print(views[view["page"]].current())

``table[key]`` is a :class:`WindowSet` for the current event's time: ``+=``, ``-=``, ``*=``
update every window holding that time (one for tumbling windows, several for hopping
ones); ``.current()`` (or ``.value()``) reads the latest-starting of them, ``.now()`` the
window of the wall clock, ``.delta(seconds)`` the window of that many seconds earlier.

Time is event time. Each partition keeps a watermark, its largest event time; a window
expires when the watermark passes its end by ``expires`` seconds (default: one window size),
and is then deleted and handed to ``on_window_close(key, (start_ms, end_ms), value)`` with
its final value. An update whose every window has expired is late: it changes nothing and
is counted (``late_events``), logged at debug, and handed to ``on_late`` if set.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import StreamerError
from .operators import HoppingWindows, TumblingWindows, hopping, tumbling
from .state import MISSING, CachedStore
from .streams import PROCESSING
from .windowing import window_codec

if TYPE_CHECKING:
    from .tables import Table

__all__ = ["WindowSet", "WindowedTable"]

logger = logging.getLogger("streamer.windows")

WATERMARK_KEY = "__watermark__"
Window = tuple[int, int]


class _Partition:
    """Expiry bookkeeping of one partition: its watermark and windows by end."""

    __slots__ = ("cached", "heap", "watermark_ms")

    def __init__(self, cached: CachedStore) -> None:
        self.cached = cached
        stored = cached.get(WATERMARK_KEY)
        self.watermark_ms: int = -(2**63) if stored is MISSING else int(stored)
        self.heap: list[tuple[int, Any]] = []  # (end_ms, store key)
        for key, _ in cached.items():
            if isinstance(key, tuple):
                heapq.heappush(self.heap, (key[2], key))


class WindowedTable:
    """A table of windowed values; made by ``table.tumbling(...)`` or ``.hopping(...)``."""

    def __init__(self, table: Table, definition: TumblingWindows | HoppingWindows,
                 expires_ms: int) -> None:
        self.table = table
        self.definition = definition
        self.expires_ms = expires_ms
        self.on_window_close: Callable[[Any, Window, Any], Any] | None = None
        self.on_late: Callable[[Any, int], Any] | None = None
        self.late_events = 0
        self._partitions: dict[int, _Partition] = {}
        self._partition_key_codec = table.key_codec
        table.partition_key_codec = table.key_codec  # a key's partition: its own bytes
        table.key_codec = window_codec  # stored under (key, start_ms, end_ms)

    def __repr__(self) -> str:
        return f"<WindowedTable {self.table.name} {self.definition}>"

    # -- time -------------------------------------------------------------------------------

    def _event_time_ms(self) -> int:
        tracker = PROCESSING.get()
        event = tracker.event if tracker is not None else None
        if event is None:
            return self.now_ms()
        return int(event.timestamp)

    def now_ms(self) -> int:
        worker = self.table.app.worker
        return worker.time_ms() if worker is not None else time.time_ns() // 1_000_000

    def _partition(self, key: Any) -> _Partition:
        cached = self.table.store_for(key)  # checks the key against the event's partition
        partition = self._partitions.get(id(cached))
        if partition is None or partition.cached is not cached:
            partition = self._partitions[id(cached)] = _Partition(cached)
        return partition

    # -- the mapping ------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> WindowSet:
        return WindowSet(self, key, self._event_time_ms())

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, WindowSet) and value.table is self:
            return  # ``table[key] += 1``: the WindowSet already wrote its windows
        self.update_at(key, self._event_time_ms(), lambda _: value)

    def update_at(self, key: Any, time_ms: int, change: Callable[[Any], Any]) -> None:
        partition = self._partition(key)
        self._advance(partition, time_ms)
        windows = [w for w in self.definition.assign(time_ms)
                   if w[1] + self.expires_ms > partition.watermark_ms]
        if not windows:
            self.late_events += 1
            self.table.late_events += 1
            logger.debug("late update of %r at %d ms: its windows expired", key, time_ms)
            if self.on_late is not None:
                self.on_late(key, time_ms)
            return
        cached = partition.cached
        for start, end in windows:
            store_key = (key, start, end)
            old = cached.get(store_key)
            if old is MISSING:
                heapq.heappush(partition.heap, (end, store_key))
                old = self.table.default() if self.table.default is not None else None
            cached.set(store_key, change(old))

    def _advance(self, partition: _Partition, time_ms: int) -> None:
        if time_ms <= partition.watermark_ms:
            return
        partition.watermark_ms = time_ms
        partition.cached.set(WATERMARK_KEY, time_ms)
        heap, cached = partition.heap, partition.cached
        while heap and heap[0][0] + self.expires_ms <= time_ms:
            end, store_key = heapq.heappop(heap)
            value = cached.get(store_key)
            if value is MISSING:
                continue
            cached.delete(store_key)
            if self.on_window_close is not None:
                self.on_window_close(store_key[0], (store_key[1], end), value)

    def read_at(self, key: Any, time_ms: int) -> Any:
        cached = self._partition(key).cached
        for start, end in reversed(self.definition.assign(time_ms)):
            value = cached.get((key, start, end))
            if value is not MISSING:
                return value
        return self.table.default() if self.table.default is not None else None

    def items(self) -> Iterator[tuple[tuple[Any, int, int], Any]]:
        """``((key, start_ms, end_ms), value)`` of every live window held here."""
        for key, value in self.table.items():
            if isinstance(key, tuple):
                yield key, value

    def as_dict(self) -> dict[tuple[Any, int, int], Any]:
        return dict(self.items())


class WindowSet:
    """The windows of one key at one time; see the module docstring."""

    __slots__ = ("key", "table", "time_ms")

    def __init__(self, table: WindowedTable, key: Any, time_ms: int) -> None:
        self.table = table
        self.key = key
        self.time_ms = time_ms

    def __iadd__(self, other: Any) -> WindowSet:
        self.table.update_at(self.key, self.time_ms, lambda old: old + other)
        return self

    def __isub__(self, other: Any) -> WindowSet:
        self.table.update_at(self.key, self.time_ms, lambda old: old - other)
        return self

    def __imul__(self, other: Any) -> WindowSet:
        self.table.update_at(self.key, self.time_ms, lambda old: old * other)
        return self

    def current(self) -> Any:
        """The value in the latest-starting window holding the event's time."""
        return self.table.read_at(self.key, self.time_ms)

    value = current

    def now(self) -> Any:
        """The value in the window holding the wall clock's time."""
        return self.table.read_at(self.key, self.table.now_ms())

    def delta(self, seconds: float) -> Any:
        """The value in the window holding the event's time minus ``seconds``."""
        return self.table.read_at(self.key, self.time_ms - int(seconds * 1000))

    def __repr__(self) -> str:
        return f"<WindowSet {self.key!r} at {self.time_ms} ms: {self.current()!r}>"


def windowed(table: Table, kind: str, size: float, step: float | None,
             expires: float | None) -> WindowedTable:
    if table.is_global:
        raise StreamerError(f"table {table.name!r}: a global table cannot be windowed")
    if table.app.worker is not None and table.app.worker.consuming:
        raise StreamerError(f"table {table.name!r}: window it before the worker starts")
    definition = tumbling(size) if kind == "tumbling" else hopping(size, step or size)
    expires_ms = definition.size_ms if expires is None else int(expires * 1000)
    if expires_ms < 0:
        raise StreamerError(f"table {table.name!r}: expires must be ≥ 0 seconds")
    return WindowedTable(table, definition, expires_ms)
