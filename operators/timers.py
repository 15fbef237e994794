"""Timers for the operators: items due at a stream time, in time order.

One heap entry per distinct time (the items of a time are listed together), so a million
windows closing at the same time cost one push. ``heap`` is never rebound: a hot path may
hold it to peek at the next time cheaply (``heap and heap[0] <= now``).

>>> timers = Timers[str]()
>>> timers.schedule(20, "b"); timers.schedule(10, "a"); timers.schedule(20, "c")
>>> list(timers.due(20))
[(10, 'a'), (20, 'b'), (20, 'c')]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Timers"]

T = TypeVar("T")


class Timers(Generic[T]):
    __slots__ = ("_at", "heap")

    def __init__(self) -> None:
        self._at: dict[int, list[T]] = {}  # time → its items, in the order scheduled
        self.heap: list[int] = []

    def schedule(self, time_ms: int, item: T) -> None:
        items = self._at.get(time_ms)
        if items is None:
            self._at[time_ms] = [item]
            heapq.heappush(self.heap, time_ms)
        else:
            items.append(item)

    def due(self, now_ms: int) -> Iterator[tuple[int, T]]:
        """``(time, item)`` of every timer at or before ``now_ms``, by time, taken off as they
        come out; items scheduled meanwhile at or before ``now_ms`` come out too."""
        heap = self.heap
        while heap and heap[0] <= now_ms:
            time_ms = heapq.heappop(heap)
            for item in self._at.pop(time_ms):
                yield time_ms, item

    def clear(self) -> None:
        self._at.clear()
        self.heap.clear()
