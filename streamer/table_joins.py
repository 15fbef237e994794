"""Joins with tables: a stream enriched from a table, and tables joined into a table.

**Stream-table** (``stream.join(table, how="inner"|"left", on=None, joiner=None)``), Kafka
Streams' KStream-KTable join::

    customers = app.table("customers", source=customers_topic)   # keyed by customer id

    @app.agent(orders)                                             # keyed by customer id
    async def enrich(stream):
        await stream.join(customers, how="left").to(enriched)     # (order, customer) values

Each event is looked up in the table as the table is when the event is processed: the row
of the event's key, or of ``on(value)``. A table change emits nothing. ``"inner"`` drops
events without a row; ``"left"`` gives them ``None``; an event whose value is ``None`` never
comes out. The value is ``joiner(value, row)``, by default the tuple ``(value, row)``; the key,
timestamp and headers are the event's. The result is a :class:`~streamer.streams.Stream`: map,
filter, ``to`` and ``async for`` work on it, and each event costs one cached-store lookup.

- A partitioned table is read in the event's partition, so the stream's topic and the
  table must be co-partitioned (same partition count, same key hashing). The worker checks
  the counts at startup and stops with a :class:`~streamer.copartition.CopartitionError`
  saying what to repartition. ``on=`` would read other partitions: with a partitioned table
  re-key the stream first (``stream.group_by(fn, name=...)``).
- A global table is held whole by every worker: no check, and ``on=`` may name any key. Its
  rows come from its changelog (or source topic) tail, so an event may meet a row a moment
  older than one another worker already sees.

**Table-table on the key** (``left.join(right, how="inner"|"left"|"outer", joiner=None,
name=None)``): a :class:`JoinedTable`, a read-only table ``<name>`` (default
``<left>-join-<right>``) with a row per key the join has (see
:mod:`streamer.operators.table_joins` for which). Every write of a row of either table
(``table[k] = v``, ``del``, ``pop``, ``+=``, a source topic's record) recomputes that key's
row in the same step, in the same partition; a row that leaves the join is deleted. Both
tables must be co-partitioned (checked at startup). The joined table is changelogged
(``<app>-<name>-changelog``) and restored like any table; it can be read (``[]``, ``get``,
``in``, ``items()`` over this worker's partitions), joined again, and sent on with
:meth:`JoinedTable.to`. A join declared over tables that already hold rows joins them when
its partitions are first served (a partition whose changelog is still empty is built from
both tables' rows in it), then follows their changes.

**Foreign key** (``left.join(right, on=fn(left_value), how="inner"|"left")``): the row of
each left key joins the right row ``on(left_value)`` names (orders → customer). The tables
may be partitioned differently: as in Kafka Streams (KIP-213), the left table's changes
(read from its changelog) go as subscriptions to ``<app>-<name>-subscriptions``, keyed by
the foreign key and partitioned like the right table; an agent beside the right table
records subscribers (table ``<name>-subscribers``) and answers each subscription, and every
subscriber of a right row that changed (read from the right changelog), on
``<app>-<name>-responses``, partitioned like the left table; the left side applies a
response only if the left row is still the value it subscribed with. Left rows remember
their foreign key in ``<name>-foreign-keys``. The internal topics need both tables'
partition counts when the join is declared (``partitions=``, or a source topic declared with
them). Changes travel through changelogs and topics, so the joined rows follow within a few
checkpoints (``commit_interval_s``) of a change.

Global tables are not joined with tables (their rows are not partitioned like anything):
join a stream with a global table instead.

**Sending changes on**: ``joined.to(topic)`` (before the worker starts) forwards the joined
table's changes to ``topic``, keyed by the row's key, the value ``None`` (a tombstone) for a
row that left the join. They are read from the joined table's changelog, so they come once
per checkpoint with the latest value of each changed row (like Kafka Streams' record cache)
and are never lost: a change is in the changelog exactly when the joined table has it.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from .copartition import require_copartitioned
from .errors import StreamerError
from .events import Event
from .operators.table_joins import (
    NO_MATCH,
    Change,
    ForeignKeyLeft,
    ForeignKeyRight,
    How,
    Joiner,
    KeyJoin,
    Response,
    Subscription,
    check_how,
    lookup_joiner,
)
from .partitioner import KeyPartitioner
from .serialization import Codec, codec_for
from .state import MISSING, CachedStore, Store
from .statistics import JoinSnapshot
from .tables import PartitionRevokedError, Table
from .topics import Topic
from .windowing import CachedMapping

if TYPE_CHECKING:
    from .app import App
    from .streams import Stream

__all__ = ["JoinedTable", "join_stream_table", "join_tables"]

AgentFunction = Callable[["Stream"], Coroutine[Any, Any, None]]

logger = logging.getLogger("streamer.joins")


# -- stream-table ----------------------------------------------------------------------------


def join_stream_table(
    stream: Stream,
    table: Table,
    *,
    how: str = "inner",
    on: Callable[[Any], Any] | None = None,
    joiner: Joiner | None = None,
) -> Stream:
    """``stream.join(table, ...)``: see the module docstring."""
    checked = check_how(how, ("inner", "left"), "stream-table join")
    combine = lookup_joiner(checked, joiner)
    name = "+".join(t.name for t in _input_topics(stream)) + f"-join-{table.name}"
    meter = stream.app.joins.get(name)
    if not isinstance(meter, _LookupMeter):  # one per join, whatever instances build it
        meter = stream.app.joins[name] = _LookupMeter(name, table, checked)
    if table.is_global:
        lookup = _global_lookup(stream, table, combine, on)
    else:
        if on is not None:
            raise StreamerError(
                f"join with table {table.name!r}: on= can only read a global table, where "
                "every key is local. Re-key the stream first so its key is the table's: "
                "stream.group_by(lambda value: <table key>, name='...').join(table)"
            )
        require_copartitioned(stream.app, f"stream-table join with table {table.name!r}",
                              [*_input_topics(stream), table])
        lookup = _partitioned_lookup(stream, table, combine)
    joined = stream.map(lookup).filter(meter.matched)  # no row (inner), or a None value
    joined.value_type = dict  # rows are tuples or whatever the joiner builds: JSON onwards
    return joined


class _LookupMeter:
    """What statistics show of a stream-table join: lookups and rows out, since start."""

    def __init__(self, name: str, table: Table, how: str) -> None:
        self.name = name
        self.table = table
        self.how = how
        self.events = 0
        self.rows = 0

    def matched(self, joined: Any) -> bool:
        """The join's filter: whether a looked-up event comes out (counted either way)."""
        self.events += 1
        if joined is NO_MATCH:  # no row (inner), or a None event value
            return False
        self.rows += 1
        return True

    def snapshot(self) -> JoinSnapshot:
        return JoinSnapshot(self.name, "stream-table", self.how, len(self.table.active),
                            events=self.events, rows=self.rows)


def _partitioned_lookup(stream: Stream, table: Table, combine: Callable[[Any, Any], Any]
                        ) -> Callable[[Any], Any]:
    active = table.active

    def lookup(value: Any) -> Any:
        event = stream.current_event
        assert event is not None
        cached = active.get(event.partition)
        if cached is None:
            raise _revoked(table, event.partition)
        key = event.key
        row = MISSING if key is None else cached.get(key)
        return combine(value, None if row is MISSING else row)

    return lookup


def _global_lookup(stream: Stream, table: Table, combine: Callable[[Any, Any], Any],
                   on: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    active = table.active
    partition_of = _partitioner(table)
    dumps_key = table.partition_key_codec.dumps

    def lookup(value: Any) -> Any:
        if on is None:
            event = stream.current_event
            assert event is not None
            key = event.key
        else:
            key = on(value)
        if key is None:
            return combine(value, None)
        row = active[partition_of(dumps_key(key))].get(key)
        return combine(value, None if row is MISSING else row)

    return lookup


def _input_topics(stream: Stream) -> list[Topic]:
    """The topics a stream reads (several for a merge), as far as they can be known."""
    from .streams import Stream, source_topic

    sources = getattr(stream.source, "sources", None)
    if sources is None:
        topic = source_topic(stream)
        return [] if topic is None else [topic]
    return [t for source in sources for t in _input_topics(Stream(stream.app, source))]


# -- table-table -----------------------------------------------------------------------------


def join_tables(
    left: Table,
    right: Table,
    *,
    how: str = "inner",
    on: Callable[[Any], Any] | None = None,
    joiner: Joiner | None = None,
    name: str | None = None,
    value_type: Any = None,
) -> JoinedTable:
    """``left.join(right, ...)``: see the module docstring. ``value_type``: the type of the
    joiner's values, for the changelog (default JSON; without a joiner the rows are pairs,
    each side stored with its own table's type)."""
    if not isinstance(right, Table):
        raise StreamerError(f"table {left.name!r} joins another table, not {right!r}")
    for table in (left, right):
        if table.is_global:
            raise StreamerError(
                f"table {table.name!r} is global: tables are joined partition by partition; "
                "join a stream with a global table instead (stream.join(table, on=...))"
            )
    name = name or f"{left.name}-join-{right.name}"
    if joiner is None and value_type is not None:
        raise StreamerError(f"join {name!r}: value_type= is for a joiner's values")
    value_codec = _PairCodec(left.value_codec, right.value_codec) if joiner is None else (
        codec_for(dict if value_type is None else value_type)
    )
    if on is None:
        checked = check_how(how, ("inner", "left", "outer"), f"table join {name!r}")
        joined = JoinedTable(left, right, name, value_codec)
        require_copartitioned(left.app, f"join of table {left.name!r} with table "
                              f"{right.name!r}", [left, right])
        _KeyJoinRuntime(joined, checked, joiner)
        left.app.joins[name] = _TableJoinMeter(joined, "table", checked)
        return joined
    checked = check_how(how, ("inner", "left"), f"foreign-key join {name!r}")
    if not (left.partition_count and right.partition_count):
        raise StreamerError(
            f"foreign-key join {name!r}: its internal topics take the tables' partition "
            "counts, so both must be known when it is declared: declare the tables with "
            "partitions= (or their source topics with partitions=)"
        )
    joined = JoinedTable(left, right, name, value_codec)
    _ForeignKeyRuntime(joined, checked, on, joiner)
    left.app.joins[name] = _TableJoinMeter(joined, "foreign key", checked)
    return joined


class _TableJoinMeter:
    """What statistics show of a table join: the joined table's rows here."""

    def __init__(self, joined: JoinedTable, kind: str, how: str) -> None:
        self.joined = joined
        self.kind = kind
        self.how = how

    def snapshot(self) -> JoinSnapshot:
        served = [p for p in self.joined.statistics().partitions if p.role != "standby"]
        return JoinSnapshot(self.joined.name, self.kind, self.how, len(served),
                            rows=sum(p.keys for p in served))


class JoinedTable(Table):
    """The result of a table-table join: a read-only, changelogged table (see the module
    docstring)."""

    def __init__(self, left: Table, right: Table, name: str, value_codec: Codec) -> None:
        app = left.app
        if name in app.tables:
            raise StreamerError(f"table {name!r} declared twice (name the join: name=...)")
        if app.worker is not None and app.worker.consuming:
            raise StreamerError(f"join {name!r}: declare joins before the worker starts")
        super().__init__(app, name, key_type=left.key_codec, value_type=value_codec,
                         partitions=left.partition_count or None)
        self.partition_key_codec = left.partition_key_codec
        self.left = left
        self.right = right
        self.keep(f"the join of {left.name!r} with {right.name!r}")
        app.tables[name] = self
        if self.partition_count:
            app.topics[self.changelog_topic.name] = self.changelog_topic
        else:  # created right after the left table's, with its count
            self.copartition_with = left.changelog_topic

    def __repr__(self) -> str:
        return f"<JoinedTable {self.name} ({len(self.active)} partitions here)>"

    def to(self, topic: Topic) -> None:
        """Send every change of the joined table to ``topic`` (see the module docstring).
        Call it where the join is declared, before the worker starts."""
        if not self.partition_count:
            raise StreamerError(
                f"join {self.name!r}: .to() reads the joined table's changelog, whose "
                "partitions must be known when it is declared: declare the joined tables "
                "with partitions="
            )
        self.app.agent(self.changelog_topic, name=f"{self.name}-to-{topic.name}")(
            _forwarder(self, topic)
        )

    def changed(self, partition: int, changes: list[Change]) -> None:
        """Tell the joins that follow this table what a join step changed."""
        for listener in self.listeners:
            for change in changes:
                listener(partition, change.key, MISSING if change.value is None else change.value)


def _forwarder(joined: JoinedTable, topic: Topic) -> AgentFunction:
    loads_key, loads_value = joined.key_codec.loads, joined.value_codec.loads

    async def forward(stream: Stream) -> None:
        async for event in stream.events():
            raw_key = _raw_key(event)
            if raw_key is None:
                continue
            await topic.send(key=loads_key(raw_key), value=loads_value(_raw_value(event)),
                             timestamp=event.timestamp)

    return forward


class _KeyJoinRuntime:
    """Keeps a joined table equal to the join of its two tables on the key: a change
    listener on each, recomputing the changed key's row in the same partition."""

    def __init__(self, joined: JoinedTable, how: How, joiner: Joiner | None) -> None:
        self.joined = joined
        self.how = how
        self.joiner = joiner
        self.operators: dict[int, tuple[tuple[CachedStore, ...], KeyJoin]] = {}
        joined.left.on_change(self.changed)
        joined.right.on_change(self.changed)
        joined.restored_hooks.append(self.build)

    def changed(self, partition: int, key: Any, value: Any) -> None:
        self.joined.changed(partition, self.operator(partition).changed(key))

    def build(self, partition: int, store: Store) -> None:
        """A partition of the joined table restored with nothing ever written to its
        changelog (a join declared over tables that already hold rows, or a first start):
        join every row the two tables hold in it. Its rows reach the changelog at the next
        checkpoint; a crash before it builds again, which writes the same rows."""
        if store.changelog_offset != 0:
            return
        joined = self.joined
        keys = dict.fromkeys(key for key, _ in _active(joined.left, partition).items())
        keys.update(dict.fromkeys(key for key, _ in _active(joined.right, partition).items()))
        operator = self.operator(partition)
        changes = [change for key in keys for change in operator.changed(key)]
        if changes:
            joined.changed(partition, changes)
            logger.info("join %r: partition %d built from the rows the tables held (%d rows)",
                        joined.name, partition, len(changes))

    def operator(self, partition: int) -> KeyJoin:
        joined = self.joined
        stores = (_active(joined.left, partition), _active(joined.right, partition),
                  _active(joined, partition))
        entry = self.operators.get(partition)
        if entry is not None and all(a is b for a, b in zip(entry[0], stores, strict=True)):
            return entry[1]
        left, right, rows = (CachedMapping(store) for store in stores)
        operator = KeyJoin(self.how, self.joiner, left=left, right=right, joined=rows)
        self.operators[partition] = (stores, operator)
        return operator


# -- foreign key -----------------------------------------------------------------------------


class _ForeignKeyRuntime:
    """A foreign-key join's two agents, internal topics and state tables (see the module
    docstring)."""

    def __init__(self, joined: JoinedTable, how: How, on: Callable[[Any], Any],
                 joiner: Joiner | None) -> None:
        app: App = joined.app
        left, right = joined.left, joined.right
        name = joined.name
        self.joined, self.how, self.joiner = joined, how, joiner
        self.left, self.right = left, right
        dumps_foreign_key = right.key_codec.dumps
        self.on = lambda value: _token(dumps_foreign_key(on(value)))
        self.subscriptions = _internal_topic(app, f"{name}-subscriptions", right.partition_count)
        self.responses = _internal_topic(app, f"{name}-responses", left.partition_count)
        self.foreign_keys = app.table(f"{name}-foreign-keys", key_type=left.key_codec,
                                      partitions=left.partition_count)
        self.subscribers = app.table(f"{name}-subscribers", key_type=right.key_codec,
                                     partitions=right.partition_count)
        require_copartitioned(app, f"foreign-key join {name!r} (left side)",
                              [left, self.responses])
        require_copartitioned(app, f"foreign-key join {name!r} (right side)",
                              [right, self.subscriptions])
        self.partition_of = _partitioner(right)
        self.lefts: dict[int, tuple[tuple[CachedStore, ...], ForeignKeyLeft]] = {}
        self.rights: dict[int, tuple[tuple[CachedStore, ...], ForeignKeyRight]] = {}
        app.agent(left.changelog_topic, name=f"{name}-left")(self.left_side)
        app.agent(right.changelog_topic, name=f"{name}-right")(self.right_side)

    # -- the left side: left changes and responses --------------------------------------------

    async def left_side(self, stream: Stream) -> None:
        responses, loads_key = self.responses.name, self.left.key_codec.loads
        loads_right = self.right.value_codec.loads
        async for event in stream.merge(self.responses.stream()).events():
            raw_key = _raw_key(event)
            if raw_key is None:
                continue
            partition = event.partition
            half = self.left_half(partition)
            key = loads_key(raw_key)
            if event.topic == responses:
                version, right_raw = _message(event)
                right_value = None if right_raw is None else loads_right(_bytes(right_raw))
                changes = half.respond(Response(key, version, partition, right_value))
            else:
                changes, subscriptions = half.left_changed(key)
                for subscription in subscriptions:
                    await self._send_subscription(subscription, raw_key, event.timestamp)
            self.joined.changed(partition, changes)

    async def _send_subscription(self, subscription: Subscription, raw_left_key: bytes,
                                 timestamp_ms: int) -> None:
        raw_foreign_key = _bytes(subscription.foreign_key)
        value = orjson.dumps([int(subscription.subscribe), _token(raw_left_key),
                              subscription.version, subscription.partition])
        partition = self.partition_of(raw_foreign_key)
        await self.joined.app.send_raw(self.subscriptions.name, raw_foreign_key, value, (),
                                       timestamp_ms, partition)

    def left_half(self, partition: int) -> ForeignKeyLeft:
        stores = (_active(self.left, partition), _active(self.foreign_keys, partition),
                  _active(self.joined, partition))
        entry = self.lefts.get(partition)
        if entry is not None and all(a is b for a, b in zip(entry[0], stores, strict=True)):
            return entry[1]
        left, foreign_keys, joined = (CachedMapping(store) for store in stores)
        half = ForeignKeyLeft(self.how, self.on, self.joiner, left=left,
                              foreign_keys=foreign_keys, joined=joined,
                              version=_versions(self.left.value_codec), partition=partition)
        self.lefts[partition] = (stores, half)
        return half

    # -- the right side: subscriptions and right changes --------------------------------------

    async def right_side(self, stream: Stream) -> None:
        subscriptions, loads_key = self.subscriptions.name, self.right.key_codec.loads
        dumps_right = self.right.value_codec.dumps
        send = self.joined.app.send_raw
        async for event in stream.merge(self.subscriptions.stream()).events():
            raw_key = _raw_key(event)
            if raw_key is None:
                continue
            half = self.right_half(event.partition)
            key = loads_key(raw_key)
            if event.topic == subscriptions:
                subscribe, left_key, version, partition = _message(event)
                responses = half.subscribe(
                    Subscription(key, left_key, version, partition, bool(subscribe))
                )
            else:
                responses = half.right_changed(key)
            for response in responses:
                raw_value = None if response.right_value is None else (
                    dumps_right(response.right_value)
                )
                value = orjson.dumps([response.version, _token(raw_value)])
                await send(self.responses.name, _bytes(response.left_key), value, (),
                           event.timestamp, response.partition)

    def right_half(self, partition: int) -> ForeignKeyRight:
        stores = (_active(self.right, partition), _active(self.subscribers, partition))
        entry = self.rights.get(partition)
        if entry is not None and all(a is b for a, b in zip(entry[0], stores, strict=True)):
            return entry[1]
        right, subscribers = (CachedMapping(store) for store in stores)
        half = ForeignKeyRight(right=right, subscribers=subscribers)
        self.rights[partition] = (stores, half)
        return half


def _internal_topic(app: App, label: str, partitions: int) -> Topic:
    topic = Topic(app, f"{app.id}-{label}", partitions=partitions, internal=True)
    if topic.name in app.topics:
        raise StreamerError(f"topic {topic.name!r} declared twice (name the join: name=...)")
    app.topics[topic.name] = topic
    return topic


def _versions(codec: Codec) -> Callable[[Any], str]:
    """A left value's fingerprint: a hash of its encoding."""
    dumps = codec.dumps

    def version(value: Any) -> str:
        return hashlib.blake2b(dumps(value) or b"", digest_size=8).hexdigest()

    return version


# -- shared ----------------------------------------------------------------------------------


class _PairCodec:
    """The rows of a join without a joiner, ``(left, right)``: each side in its own table's
    codec (so typed values come back typed), length-prefixed; -1 for a missing side."""

    def __init__(self, left: Codec, right: Codec) -> None:
        self.left = left
        self.right = right

    def dumps(self, value: Any) -> bytes | None:
        if value is None:
            return None
        left, right = value
        return _frame(self.left.dumps(left)) + _frame(self.right.dumps(right))

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        left, rest = _unframe(data)
        right, _ = _unframe(rest)
        return (self.left.loads(left) if left is not None else None,
                self.right.loads(right) if right is not None else None)


_LENGTH = struct.Struct(">i")


def _frame(data: bytes | None) -> bytes:
    return _LENGTH.pack(-1) if data is None else _LENGTH.pack(len(data)) + data


def _unframe(data: bytes) -> tuple[bytes | None, bytes]:
    (length,) = _LENGTH.unpack_from(data)
    if length < 0:
        return None, data[4:]
    return data[4:4 + length], data[4 + length:]


def _token(raw: bytes | None) -> str | None:
    """Bytes as a JSON string (one character per byte), for keys and values in messages."""
    return None if raw is None else raw.decode("latin-1")


def _bytes(token: str) -> bytes:
    return token.encode("latin-1")


def _raw_key(event: Event) -> bytes | None:
    """The key as it was on the wire (decoded for topics the app declared)."""
    raw: bytes | None = event.raw_key if event.raw_key is not None else event.key
    return raw


def _raw_value(event: Event) -> bytes | None:
    """The value of a changelog record (declared as bytes: as on the wire)."""
    raw: bytes | None = event.value
    return raw


def _message(event: Event) -> Any:
    """A subscription or response: a JSON array."""
    raw = event.value
    if not isinstance(raw, bytes):
        raise StreamerError(f"{event.topic}[{event.partition}] offset {event.offset}: "
                            "not a message of a foreign-key join")
    return orjson.loads(raw)


def _partitioner(table: Table) -> Callable[[bytes | None], int]:
    """An encoded key's partition in ``table``."""
    partitioner = KeyPartitioner()

    def partition_of(raw_key: bytes | None) -> int:
        return partitioner.partition(raw_key, table.partition_count)

    return partition_of


def _active(table: Table, partition: int) -> CachedStore:
    cached = table.active.get(partition)
    if cached is None:
        raise _revoked(table, partition)
    return cached


def _revoked(table: Table, partition: int) -> PartitionRevokedError:
    return PartitionRevokedError(
        f"table {table.name!r}: partition {partition} is no longer this worker's"
    )
