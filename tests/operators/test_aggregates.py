"""The built-in aggregations and user aggregations."""

from __future__ import annotations

from functools import reduce as fold
from typing import Any

import orjson
import pytest
from streamer.operators import Aggregate, WindowError, aggregate, aggregates


def run(agg: Aggregate, values: list[Any]) -> Any:
    return agg.result(fold(agg.add, values, agg.init()))


def split_merge(agg: Aggregate, values: list[Any], at: int) -> Any:
    left = fold(agg.add, values[:at], agg.init())
    right = fold(agg.add, values[at:], agg.init())
    return agg.result(agg.merge(left, right))


@pytest.mark.parametrize(
    ("make", "values", "expected", "empty"),
    [
        (aggregates.count, [3, 1, 2], 3, 0),
        (aggregates.sum, [3, 1, 2], 6, 0),
        (aggregates.min, [3, 1, 2], 1, None),
        (aggregates.max, [3, 1, 2], 3, None),
        (aggregates.mean, [3, 1, 2], 2.0, None),
        (lambda: aggregates.reduce(lambda a, b: a * b), [3, 1, 2], 6, None),
        (lambda: aggregates.sum(lambda v: v["n"]), [{"n": 1}, {"n": 4}], 5, 0),
        (lambda: aggregates.max(len), ["ab", "abc", "a"], 3, None),
        (lambda: aggregates.mean(lambda v: v["n"]), [{"n": 1}, {"n": 4}], 2.5, None),
    ],
)
def test_builtins(make: Any, values: list[Any], expected: Any, empty: Any) -> None:
    agg = make()
    assert agg.mergeable
    assert run(agg, values) == expected
    assert run(agg, []) == empty
    for at in range(len(values) + 1):  # merge agrees with adding, wherever the split
        assert split_merge(agg, values, at) == expected
    acc = fold(agg.add, values, agg.init())
    assert agg.result(orjson.loads(orjson.dumps(acc))) == expected  # accumulators are JSON


def test_reduce_treats_none_as_a_value() -> None:
    agg = aggregates.reduce(lambda a, b: b if a is None else a)
    assert run(agg, [None, 2]) == 2
    assert run(agg, [None]) is None
    assert agg.merge(agg.init(), agg.init()) == agg.init()


def test_user_aggregate() -> None:
    top2 = aggregate(
        list, lambda acc, v: sorted([*acc, v])[-2:], merge=lambda a, b: sorted(a + b)[-2:],
        result=tuple, name="top2",
    )
    assert run(top2, [5, 1, 9, 3]) == (5, 9)
    assert split_merge(top2, [5, 1, 9, 3], 2) == (5, 9)
    assert top2.mergeable and top2.name == "top2"


def test_user_aggregate_without_merge() -> None:
    def add_value(acc: list[int], value: int) -> list[int]:
        return [*acc, value]

    collect = aggregate(list, add_value)
    assert not collect.mergeable
    assert collect.name == "add_value"
    assert run(collect, [1, 2]) == [1, 2]
    with pytest.raises(WindowError, match="add_value: this aggregate has no merge"):
        collect.merge([1], [2])


def test_subclass_mergeable_when_it_overrides_merge() -> None:
    class Last(Aggregate):
        def init(self) -> Any:
            return None

        def add(self, acc: Any, value: Any) -> Any:
            return value

    class LastMergeable(Last):
        def merge(self, left: Any, right: Any) -> Any:
            return left if right is None else right

    assert not Last().mergeable
    assert LastMergeable().mergeable
    assert run(LastMergeable(), [1, 2]) == 2
