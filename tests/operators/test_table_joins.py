"""Joins with tables against brute-force relational joins written apart from the operators:

- stream-table: each event against the table as it is at that event's position in the input;
- table-table on the key: random upserts and deletes on both sides, over 1–3 partitions; the
  joined store ends up equal to the join of the final tables, and the changes it emitted,
  replayed onto an empty dict, give the same rows (no stale row, a tombstone for each row
  that left);
- foreign key: the same, with the left and right tables partitioned differently and the
  two halves talking through per-partition queues that a random scheduler drains in any
  order, some messages delivered again (a consumer rewound to an older offset:
  at-least-once); no subscription is left behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.operators import (
    NO_MATCH,
    Change,
    ForeignKeyLeft,
    ForeignKeyRight,
    KeyJoin,
    Response,
    Subscription,
    join_value,
    lookup_joiner,
)

from streamer.errors import StreamerError

from .oracle import JsonStore
from .strategies import partition_of

EXAMPLES = settings(max_examples=150, deadline=None)
KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
VALUES = st.one_of(st.none(), st.integers(0, 9))  # None: a delete (a tombstone)
HOWS = st.sampled_from(["inner", "left", "outer"])


def _pair(left: Any, right: Any) -> Any:
    return {"l": left, "r": right}


# -- the brute-force joins ------------------------------------------------------------------


def relational_join(left: dict[str, Any], right: dict[str, Any], how: str,
                    joiner: Callable[[Any, Any], Any] | None) -> dict[str, Any]:
    build = joiner or (lambda lv, rv: (lv, rv))
    rows = {}
    for key in set(left) | set(right):
        if key in left and key in right:
            rows[key] = build(left[key], right[key])
        elif key in left and how in ("left", "outer"):
            rows[key] = build(left[key], None)
        elif key in right and how == "outer":
            rows[key] = build(None, right[key])
    return rows


def foreign_key_join(left: dict[str, Any], right: dict[str, Any], how: str) -> dict[str, Any]:
    rows = {}
    for key, value in left.items():
        match = right.get(value["fk"]) if value["fk"] is not None else None
        if match is not None or how == "left":
            rows[key] = (value, match)
    return rows


def replay(changes: list[Change]) -> dict[Any, Any]:
    rows: dict[Any, Any] = {}
    for change in changes:
        if change.value is None:
            assert change.key in rows, f"a tombstone for {change.key!r}, which had no row"
            del rows[change.key]
        else:
            rows[change.key] = change.value
    return rows


def _apply(table: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


# -- stream-table -----------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data(), partitions=st.integers(1, 3), how=st.sampled_from(["inner", "left"]),
       with_joiner=st.booleans())
def test_stream_table_lookups_match_the_table_at_each_event(
    data: st.DataObject, partitions: int, how: str, with_joiner: bool
) -> None:
    joiner = _pair if with_joiner else None
    ops = data.draw(st.lists(st.tuples(st.sampled_from(["table", "event"]), KEYS,
                                       st.one_of(st.none(), st.integers(0, 9))), max_size=60))
    combine = lookup_joiner(how, joiner)  # type: ignore[arg-type]
    stores: list[dict[str, Any]] = [{} for _ in range(partitions)]
    got = []
    for kind, key, value in ops:
        store = stores[partition_of(key, partitions)]
        if kind == "table":
            _apply(store, key, value)
        else:
            row = combine(value, store.get(key))
            if row is not NO_MATCH:
                got.append((key, row))

    expected = []
    for index, (kind, key, value) in enumerate(ops):
        if kind != "event" or value is None:
            continue  # a None event value never comes out
        table: dict[str, Any] = {}
        for earlier_kind, earlier_key, earlier_value in ops[:index]:
            if earlier_kind == "table":
                _apply(table, earlier_key, earlier_value)
        match = table.get(key)
        if match is None and how == "inner":
            continue
        expected.append((key, (joiner or (lambda lv, rv: (lv, rv)))(value, match)))
    assert got == expected


def test_stream_table_join_refuses_outer_and_unknown_hows() -> None:
    with pytest.raises(StreamerError, match="inner or left"):
        lookup_joiner("outer", None)
    with pytest.raises(StreamerError, match='how is one of "inner", "left", "outer", not \'full\''):
        KeyJoin("full", None, left={}, right={}, joined={})  # type: ignore[arg-type]


# -- table-table on the key -------------------------------------------------------------------


@EXAMPLES
@given(ops=st.lists(st.tuples(st.sampled_from(["left", "right"]), KEYS, VALUES), max_size=80),
       partitions=st.integers(1, 3), how=HOWS, json=st.booleans())
def test_key_join_equals_the_relational_join_of_the_final_tables(
    ops: list[tuple[str, str, Any]], partitions: int, how: str, json: bool
) -> None:
    joiner = _pair if json else None  # JSON stores give lists for tuples: use dict rows there
    sides: dict[str, list[dict[str, Any]]] = {
        "left": [{} for _ in range(partitions)], "right": [{} for _ in range(partitions)]
    }
    joined: list[Any] = [JsonStore() if json else {} for _ in range(partitions)]
    operators = [
        KeyJoin(how, joiner, left=sides["left"][p], right=sides["right"][p],  # type: ignore[arg-type]
                joined=joined[p])
        for p in range(partitions)
    ]
    changes: list[Change] = []
    for side, key, value in ops:
        partition = partition_of(key, partitions)
        _apply(sides[side][partition], key, value)
        changes += operators[partition].changed(key)

    left = {k: v for store in sides["left"] for k, v in store.items()}
    right = {k: v for store in sides["right"] for k, v in store.items()}
    expected = relational_join(left, right, how, joiner)
    rows = {k: v for store in joined for k, v in store.items()}
    assert rows == expected
    assert replay(changes) == expected


def test_key_join_rows_by_hand() -> None:
    left: dict[str, Any] = {"k": 1}
    right: dict[str, Any] = {}
    rows: dict[str, Any] = {}
    inner = KeyJoin("inner", None, left=left, right=right, joined=rows)
    assert inner.changed("k") == []  # no right side: no row, and no tombstone either
    right["k"] = 2
    assert inner.changed("k") == [Change("k", (1, 2))]
    assert inner.changed("k") == []  # unchanged: nothing emitted
    del left["k"]
    assert inner.changed("k") == [Change("k", None)]
    assert rows == {}
    assert join_value("outer", None, None, 5) == (None, 5)
    assert join_value("left", None, None, 5) is NO_MATCH


# -- foreign key ------------------------------------------------------------------------------


LEFT_VALUES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"fk": st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3"])),
                           "n": st.integers(0, 3)}),
)
RIGHT_KEYS = st.sampled_from(["r1", "r2", "r3"])


def _version(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).hex()


class _ForeignKeyWorld:
    """Both halves of a foreign-key join over differently partitioned tables, with the
    changelogs and the two internal topics as queues per partition."""

    def __init__(self, how: str, left_partitions: int, right_partitions: int) -> None:
        self.left_partitions, self.right_partitions = left_partitions, right_partitions
        self.left: list[dict[str, Any]] = [{} for _ in range(left_partitions)]
        self.right: list[dict[str, Any]] = [{} for _ in range(right_partitions)]
        self.joined: list[JsonStore] = [JsonStore() for _ in range(left_partitions)]
        self.lefts = [
            ForeignKeyLeft(how, lambda v: v["fk"], None, left=self.left[p],  # type: ignore[arg-type]
                           foreign_keys=JsonStore(), joined=self.joined[p], version=_version,
                           partition=p)
            for p in range(left_partitions)
        ]
        self.subscribers = [JsonStore() for _ in range(right_partitions)]
        self.rights = [ForeignKeyRight(right=self.right[q], subscribers=self.subscribers[q])
                       for q in range(right_partitions)]
        # (queue name, partition) → messages: left and right changelogs, the two topics
        self.queues: dict[tuple[str, int], deque[Any]] = {}
        self.delivered: dict[tuple[str, int], list[Any]] = {}
        self.changes: list[Change] = []

    def queue(self, name: str, partition: int) -> deque[Any]:
        return self.queues.setdefault((name, partition), deque())

    def write_left(self, key: str, value: Any) -> None:
        partition = partition_of(key, self.left_partitions)
        _apply(self.left[partition], key, value)
        self.queue("left-changelog", partition).append(key)

    def write_right(self, key: str, value: Any) -> None:
        partition = partition_of(key, self.right_partitions)
        _apply(self.right[partition], key, value)
        self.queue("right-changelog", partition).append(key)

    def busy(self) -> list[tuple[str, int]]:
        return sorted(name for name, queue in self.queues.items() if queue)

    def rewind(self, name: str, partition: int, count: int) -> None:
        """Deliver the last ``count`` messages of a queue again, in order (a consumer that
        restarts from an older offset; the state it wrote stays)."""
        done = self.delivered.get((name, partition), [])
        self.queue(name, partition).extendleft(reversed(done[-count:]))
        del done[-count:]

    def deliver(self, name: str, partition: int) -> None:
        """The head message of a queue."""
        message = self.queues[(name, partition)].popleft()
        self.delivered.setdefault((name, partition), []).append(message)
        if name == "left-changelog":
            changes, subscriptions = self.lefts[partition].left_changed(message)
            self.changes += changes
            for subscription in subscriptions:
                self._send_subscription(subscription)
        elif name == "responses":
            self.changes += self.lefts[partition].respond(_json(message))
        elif name == "subscriptions":
            for response in self.rights[partition].subscribe(_json(message)):
                self.queue("responses", response.partition).append(response)
        else:
            for response in self.rights[partition].right_changed(message):
                self.queue("responses", response.partition).append(response)

    def _send_subscription(self, subscription: Subscription) -> None:
        partition = partition_of(subscription.foreign_key, self.right_partitions)
        self.queue("subscriptions", partition).append(subscription)

    def rows(self) -> dict[str, Any]:
        return {k: tuple(v) for store in self.joined for k, v in store.items()}

    def tables(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({k: v for p in self.left for k, v in p.items()},
                {k: v for p in self.right for k, v in p.items()})


def _json(message: Any) -> Any:
    """A message as it comes off a topic: through JSON (tuples become lists)."""
    fields = orjson.loads(orjson.dumps([getattr(message, f) for f in message.__slots__]))
    return type(message)(*fields)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), how=st.sampled_from(["inner", "left"]),
       left_partitions=st.integers(1, 3), right_partitions=st.integers(1, 3))
def test_foreign_key_join_converges_to_the_relational_join(
    data: st.DataObject, how: str, left_partitions: int, right_partitions: int
) -> None:
    world = _ForeignKeyWorld(how, left_partitions, right_partitions)
    for _ in range(data.draw(st.integers(0, 60))):
        busy = world.busy()
        steps = ["left", "right", "rewind"] + ["deliver", "deliver"] * bool(busy)
        step = data.draw(st.sampled_from(steps))
        if step == "left":
            world.write_left(data.draw(KEYS), data.draw(LEFT_VALUES))
        elif step == "right":
            world.write_right(data.draw(RIGHT_KEYS), data.draw(st.one_of(st.none(),
                                                                         st.integers(0, 9))))
        elif step == "rewind" and world.delivered:
            name, partition = data.draw(st.sampled_from(sorted(world.delivered)))
            world.rewind(name, partition, data.draw(st.integers(1, 3)))
        elif step == "deliver":
            world.deliver(*data.draw(st.sampled_from(busy)))
    while busy := world.busy():  # deliver everything still on its way, in some order
        world.deliver(*data.draw(st.sampled_from(busy)))

    left, right = world.tables()
    expected = foreign_key_join(left, right, how)
    assert world.rows() == expected
    assert {k: tuple(v) for k, v in replay(world.changes).items()} == expected
    # No subscription outlives its reference (a left row's foreign key moved or it left).
    subscribed: dict[str, dict[str, Any]] = {}
    for key, value in left.items():
        if value["fk"] is not None:
            subscribed.setdefault(value["fk"], {})[key] = [
                _version(value), partition_of(key, left_partitions)
            ]
    assert {k: v for store in world.subscribers for k, v in store.items()} == subscribed


def test_stale_responses_are_dropped() -> None:
    left: dict[str, Any] = {"o1": {"fk": "c1", "n": 0}}
    half = ForeignKeyLeft("inner", lambda v: v["fk"], None, left=left, foreign_keys={},
                          joined={}, version=_version, partition=0)
    changes, subscriptions = half.left_changed("o1")
    assert changes == [] and subscriptions == [
        Subscription("c1", "o1", _version(left["o1"]), 0, True)
    ]
    old_version = subscriptions[0].version
    left["o1"] = {"fk": "c2", "n": 0}  # the foreign key moves before the answer came
    changes, subscriptions = half.left_changed("o1")
    assert [s.subscribe for s in subscriptions] == [False, True]
    assert half.respond(Response("o1", old_version, 0, "customer 1")) == []
    assert half.stale_responses == 1
    new_version = subscriptions[1].version
    assert half.respond(Response("o1", new_version, 0, "customer 2")) == [
        Change("o1", ({"fk": "c2", "n": 0}, "customer 2"))
    ]
