"""Aggregations: how a window folds its events into one value.

An :class:`Aggregate` has four functions over an *accumulator*::

    init() -> acc                 the accumulator of no events
    add(acc, value) -> acc        fold one event's value in
    merge(acc1, acc2) -> acc      combine two partial accumulators (sessions, sliding windows)
    result(acc) -> output         what a window reports

Accumulators are persisted to a changelog as JSON, so they must be plain JSON values: ints,
floats, strings, lists, dicts with string keys, ``None`` (a tuple comes back as a list). The
functions must not keep state of their own: after a restart, the accumulators are all there
is. ``add`` may update ``acc`` in place and return it.

The built-ins take ``fn`` to pick the number out of a value (``None``: the value itself)::

    count()  sum(fn)  min(fn)  max(fn)  mean(fn)  reduce(fn)  aggregate(init, add, ...)

``min``, ``max`` and ``sum`` shadow Python's builtins here: import this module rather than
its names (``from streamer.operators import aggregates as agg; agg.sum()``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

from .errors import WindowError

__all__ = [
    "Aggregate",
    "aggregate",
    "count",
    "max",
    "mean",
    "min",
    "reduce",
    "sum",
]

Extract = Callable[[Any], Any]


class Aggregate:
    """Base class of aggregations; subclass it, or build one with :func:`aggregate`.

    A subclass that does not override :meth:`merge` is not :attr:`mergeable`, and cannot be
    used with session or sliding windows.
    """

    name = "aggregate"

    def init(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, value: Any) -> Any:
        raise NotImplementedError

    def merge(self, left: Any, right: Any) -> Any:
        raise WindowError(f"{self.name}: this aggregate has no merge")

    def result(self, acc: Any) -> Any:
        return acc

    @property
    def mergeable(self) -> bool:
        return type(self).merge is not Aggregate.merge

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class _Count(Aggregate):
    name = "count"

    def init(self) -> int:
        return 0

    def add(self, acc: int, value: Any) -> int:
        return acc + 1

    def merge(self, left: int, right: int) -> int:
        return left + right


class _Sum(Aggregate):
    name = "sum"

    def __init__(self, fn: Extract | None) -> None:
        self.fn = fn

    def init(self) -> Any:
        return 0

    def add(self, acc: Any, value: Any) -> Any:
        return acc + (value if self.fn is None else self.fn(value))

    def merge(self, left: Any, right: Any) -> Any:
        return left + right


class _Extreme(Aggregate):
    """min or max; the accumulator is ``None`` until the first value."""

    def __init__(self, fn: Extract | None, pick: Callable[[Any, Any], Any], name: str) -> None:
        self.fn = fn
        self.pick = pick
        self.name = name

    def init(self) -> Any:
        return None

    def add(self, acc: Any, value: Any) -> Any:
        number = value if self.fn is None else self.fn(value)
        return number if acc is None else self.pick(acc, number)

    def merge(self, left: Any, right: Any) -> Any:
        if left is None:
            return right
        return left if right is None else self.pick(left, right)


class _Mean(Aggregate):
    """The accumulator is ``[total, count]``; the result is ``None`` for no values."""

    name = "mean"

    def __init__(self, fn: Extract | None) -> None:
        self.fn = fn

    def init(self) -> list[Any]:
        return [0, 0]

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        return [acc[0] + (value if self.fn is None else self.fn(value)), acc[1] + 1]

    def merge(self, left: list[Any], right: list[Any]) -> list[Any]:
        return [left[0] + right[0], left[1] + right[1]]

    def result(self, acc: list[Any]) -> float | None:
        return acc[0] / acc[1] if acc[1] else None


class _Reduce(Aggregate):
    """``fn(fn(v1, v2), v3)…``; the accumulator is ``[]`` before the first value and
    ``[reduced]`` after, so ``None`` values reduce like any other."""

    name = "reduce"

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def init(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any) -> list[Any]:
        return [self.fn(acc[0], value)] if acc else [value]

    def merge(self, left: list[Any], right: list[Any]) -> list[Any]:
        if not left:
            return right
        return [self.fn(left[0], right[0])] if right else left

    def result(self, acc: list[Any]) -> Any:
        return acc[0] if acc else None


class _UserAggregate(Aggregate):
    def __init__(
        self,
        init: Callable[[], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None,
        result: Callable[[Any], Any] | None,
        name: str,
    ) -> None:
        self._init = init
        self._add = add
        self._merge = merge
        self._result = result
        self.name = name

    def init(self) -> Any:
        return self._init()

    def add(self, acc: Any, value: Any) -> Any:
        return self._add(acc, value)

    def merge(self, left: Any, right: Any) -> Any:
        if self._merge is None:
            return super().merge(left, right)
        return self._merge(left, right)

    def result(self, acc: Any) -> Any:
        return acc if self._result is None else self._result(acc)

    @property
    def mergeable(self) -> bool:
        return self._merge is not None


def count() -> Aggregate:
    """The number of events."""
    return _Count()


def sum(fn: Extract | None = None) -> Aggregate:  # shadows the builtin: the name users expect
    """The sum of ``fn(value)`` (or of the values); 0 for no events."""
    return _Sum(fn)


def min(fn: Extract | None = None) -> Aggregate:
    """The smallest ``fn(value)`` (or value)."""
    return _Extreme(fn, builtins.min, "min")


def max(fn: Extract | None = None) -> Aggregate:
    """The largest ``fn(value)`` (or value)."""
    return _Extreme(fn, builtins.max, "max")


def mean(fn: Extract | None = None) -> Aggregate:
    """The arithmetic mean of ``fn(value)`` (or of the values), a float."""
    return _Mean(fn)


def reduce(fn: Callable[[Any, Any], Any]) -> Aggregate:
    """Fold the values with ``fn(acc, value)``; the first value is the initial accumulator,
    and ``fn`` also merges two partial results, so it must be associative. The values
    themselves become the accumulator: they must be JSON values."""
    return _Reduce(fn)


def aggregate(
    init: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
    result: Callable[[Any], Any] | None = None,
    *,
    name: str | None = None,
) -> Aggregate:
    """A user aggregation. The accumulator must be a plain JSON value (see the module
    docstring); session and sliding windows need ``merge``.

    >>> top = aggregate(list, lambda acc, v: sorted(acc + [v])[-3:],
    ...                 merge=lambda a, b: sorted(a + b)[-3:])
    >>> top.add(top.add(top.init(), 5), 7)
    [5, 7]
    """
    return _UserAggregate(init, add, merge, result, name or str(getattr(add, "__name__", "add")))
