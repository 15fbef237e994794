"""Joins with tables, as pure logic: no I/O, no asyncio, state in mapping-like stores.

A row's two sides are looked up by key; a missing key and a ``None`` value both mean "no
row" (``None`` is a tombstone, as in Kafka). ``how`` says which rows exist, ``joiner(left,
right)`` builds a row's value (default: the tuple ``(left, right)``, with ``None`` for a
missing side):

- ``"inner"``: both sides are there;
- ``"left"``: the left side is there;
- ``"outer"``: either side is there (table-table joins on the key only).

Three joins use that rule:

- **stream-table** (:func:`lookup_joiner`): each event against the table row of its key as
  it is when the event is processed; a change of the table emits nothing (Kafka Streams'
  KStream-KTable join). Events without a row come out with ``None`` (left) or not at all
  (inner); an event whose value is ``None`` never comes out.
- **table-table on the key** (:class:`KeyJoin`): after a row of either side changed,
  :meth:`KeyJoin.changed` recomputes that key's row from both tables and writes it to the
  joined store. It returns the :class:`Change`: the new value, or ``None`` when the row
  left the join (a tombstone); nothing when the row is as it was.
- **foreign key** (:class:`ForeignKeyLeft`, :class:`ForeignKeyRight`): the left value names
  the right key (``on(left_value)``; ``None``: no reference). Kafka Streams' way (KIP-213),
  for tables partitioned differently: the left half, beside the left table, sends a
  :class:`Subscription` to the right key's partition when a left row changes (and an
  unsubscription to the key it referenced before); the right half, beside the right table,
  records subscribers per right key and answers each subscription, and every subscriber of
  a right row that changed, with a :class:`Response` carrying the right value. The left
  half applies a response only if the left row still has the value the subscription was
  made for (the ``version``, a fingerprint of that value): responses to older values are
  stale and dropped. A deleted left row leaves the join at once; a left row without a
  reference comes out at once with ``None`` (left join) or leaves it (inner). Once every
  message is delivered, the joined store equals the join of the two tables, whatever order
  partitions were processed in; each message may be delivered more than once.

Store layouts (plain JSON values, so any store that round-trips JSON will do)::

    joined            left key → the row's value
    foreign keys      left key → [foreign key, version]        (left half)
    subscribers       right key → {left key: [version, left partition]}   (right half)

Left keys in the subscribers' store are JSON object keys: strings (the runtime passes
encoded keys).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from .errors import JoinError

__all__ = [
    "NO_MATCH",
    "Change",
    "ForeignKeyLeft",
    "ForeignKeyRight",
    "How",
    "Joiner",
    "KeyJoin",
    "Lookup",
    "Response",
    "Subscription",
    "check_how",
    "join_value",
    "lookup_joiner",
]

How = Literal["inner", "left", "outer"]
Joiner = Callable[[Any, Any], Any]


class _NoMatch:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_MATCH"


NO_MATCH: Final[Any] = _NoMatch()  # no row for these sides (``how`` rules them out)


class Lookup(Protocol):
    """A table as a join reads it: a plain ``dict`` will do."""

    def get(self, key: Any, /) -> Any: ...


class JoinedStore(Lookup, Protocol):
    def __setitem__(self, key: Any, value: Any, /) -> None: ...

    def __delitem__(self, key: Any, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    """A row of a joined table changed: its new value, or ``None`` (it left the join)."""

    key: Any
    value: Any


@dataclass(frozen=True, slots=True)
class Subscription:
    """Left row ``left_key`` (in left partition ``partition``) now references (or, with
    ``subscribe=False``, no longer references) right row ``foreign_key``."""

    foreign_key: Any
    left_key: Any
    version: str
    partition: int
    subscribe: bool


@dataclass(frozen=True, slots=True)
class Response:
    """The right row a subscription refers to, for left value ``version``."""

    left_key: Any
    version: str
    partition: int
    right_value: Any  # None: no such right row


def check_how(how: object, allowed: Iterable[str], what: str) -> How:
    """``how`` if it is one of ``allowed``, else a :class:`JoinError` that lists them."""
    allowed = tuple(allowed)
    if how not in allowed:
        listed = ", ".join(f'"{h}"' for h in allowed)  # worded as stream joins word it
        raise JoinError(f"{what}: how is one of {listed}, not {how!r}")
    checked: How = how  # type: ignore[assignment]  # one of the literals, checked above
    return checked


def join_value(how: How, joiner: Joiner | None, left: Any, right: Any) -> Any:
    """The value of the row with these sides (``None``: absent), or :data:`NO_MATCH`."""
    if left is None:
        if how != "outer" or right is None:
            return NO_MATCH
    elif right is None and how == "inner":
        return NO_MATCH
    return (left, right) if joiner is None else joiner(left, right)


def lookup_joiner(how: How, joiner: Joiner | None) -> Callable[[Any, Any], Any]:
    """:func:`join_value` for a stream-table join (inner or left), specialised: it runs once
    per event."""
    if how == "outer":
        raise JoinError("a stream-table join is inner or left: a table change emits nothing")
    if how == "inner":
        if joiner is None:
            return lambda left, right: (
                NO_MATCH if left is None or right is None else (left, right)
            )
        return lambda left, right: (
            NO_MATCH if left is None or right is None else joiner(left, right)
        )
    if joiner is None:
        return lambda left, right: NO_MATCH if left is None else (left, right)
    return lambda left, right: NO_MATCH if left is None else joiner(left, right)


def _write(joined: JoinedStore, key: Any, value: Any) -> list[Change]:
    """Make ``joined[key]`` be ``value`` (:data:`NO_MATCH`: absent); the change, if any."""
    old = joined.get(key)
    if value is NO_MATCH:
        if old is None:
            return []
        del joined[key]
        return [Change(key, None)]
    if old is not None and old == value:
        return []
    joined[key] = value
    return [Change(key, value)]


class KeyJoin:
    """A table-table join on the key; see the module docstring."""

    def __init__(
        self, how: How, joiner: Joiner | None, *, left: Lookup, right: Lookup,
        joined: JoinedStore,
    ) -> None:
        self.how = check_how(how, ("inner", "left", "outer"), "table join")
        self.joiner = joiner
        self.left = left
        self.right = right
        self.joined = joined

    def changed(self, key: Any) -> list[Change]:
        """Either side's row ``key`` changed: recompute the joined row."""
        row = join_value(self.how, self.joiner, self.left.get(key), self.right.get(key))
        return _write(self.joined, key, row)


class ForeignKeyLeft:
    """The left half of a foreign-key join, over one left partition; see the module
    docstring. ``version(left_value)`` fingerprints a left value (equal values, equal
    versions)."""

    def __init__(
        self, how: How, on: Callable[[Any], Hashable | None], joiner: Joiner | None, *,
        left: Lookup, foreign_keys: JoinedStore, joined: JoinedStore,
        version: Callable[[Any], str], partition: int,
    ) -> None:
        self.how = check_how(how, ("inner", "left"), "foreign-key join")
        self.on = on
        self.joiner = joiner
        self.left = left
        self.foreign_keys = foreign_keys
        self.joined = joined
        self.version = version
        self.partition = partition
        self.stale_responses = 0

    def left_changed(self, key: Any) -> tuple[list[Change], list[Subscription]]:
        """Left row ``key`` changed (or was deleted): the joined rows that change now, and
        the subscriptions to send."""
        value = self.left.get(key)
        previous = self.foreign_keys.get(key)  # [foreign key, version] or None
        old_key = None if previous is None else previous[0]
        if value is None:
            if previous is None:
                return [], []
            del self.foreign_keys[key]
            leaving = self._subscription(old_key, key, previous[1], subscribe=False)
            return _write(self.joined, key, NO_MATCH), leaving
        version = self.version(value)
        if previous is not None and previous[1] == version:
            return [], []  # the same value again (a replay): already subscribed
        foreign_key = self.on(value)
        self.foreign_keys[key] = [foreign_key, version]
        messages = []
        if old_key is not None and old_key != foreign_key:
            messages += self._subscription(old_key, key, previous[1], subscribe=False)
        if foreign_key is None:
            return _write(self.joined, key, self._row(value, None)), messages
        messages += self._subscription(foreign_key, key, version, subscribe=True)
        return [], messages

    def respond(self, response: Response) -> list[Change]:
        """Apply a response, unless the left row changed since its subscription."""
        key = response.left_key
        value = self.left.get(key)
        if value is None or self.version(value) != response.version:
            self.stale_responses += 1
            return []
        return _write(self.joined, key, self._row(value, response.right_value))

    def _row(self, left: Any, right: Any) -> Any:
        return join_value(self.how, self.joiner, left, right)

    def _subscription(self, foreign_key: Any, key: Any, version: str, *, subscribe: bool
                      ) -> list[Subscription]:
        if foreign_key is None:
            return []
        return [Subscription(foreign_key, key, version, self.partition, subscribe)]


class ForeignKeyRight:
    """The right half of a foreign-key join, over one right partition; see the module
    docstring."""

    def __init__(self, *, right: Lookup, subscribers: JoinedStore) -> None:
        self.right = right
        self.subscribers = subscribers

    def subscribe(self, message: Subscription) -> list[Response]:
        """Record (or drop) a subscriber; a subscription is answered at once."""
        key = message.foreign_key
        entries = dict(self.subscribers.get(key) or {})
        if message.subscribe:
            entries[message.left_key] = [message.version, message.partition]
            self.subscribers[key] = entries
            return [Response(message.left_key, message.version, message.partition,
                             self.right.get(key))]
        if entries.pop(message.left_key, None) is not None:
            if entries:
                self.subscribers[key] = entries
            else:
                del self.subscribers[key]
        return []

    def right_changed(self, key: Any) -> list[Response]:
        """Right row ``key`` changed (or was deleted): a response to each subscriber."""
        entries = self.subscribers.get(key)
        if not entries:
            return []
        value = self.right.get(key)
        return [Response(left_key, version, partition, value)
                for left_key, (version, partition) in entries.items()]
