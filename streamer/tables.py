"""Tables: dict-like state, partitioned like the streams that update it, kept in stores
(RocksDB by default) and backed by a compacted changelog topic::

    counts = app.table("counts", default=int)

    @app.agent(clicks)
    async def count(stream):
        async for click in stream:           # clicks keyed by page
            counts[click["page"]] += 1

A table has as many partitions as its changelog topic ``<app>-<name>-changelog``; the worker
owns table partition ``p`` when it owns partition ``p`` of the topics its agents read (the
``streamer`` assignor keeps equal partition numbers together). Inside an agent the table
partition is the current event's, and a key that hashes elsewhere is an error that says to
re-key the stream (``group_by``) first: updating a table from a stream partitioned another way
would scatter a key's state over workers.

Reads and writes go through a write-back cache; at each checkpoint the changed keys go to the
changelog (one record per key), the log acknowledges them, the store records them together
with the changelog offset, and only then are the input offsets committed. A restarted worker
restores each partition by replaying the changelog from the store's offset.

A global table (``app.global_table``) is held whole by every worker: any key can be read
anywhere; writes go to the key's changelog partition and every worker applies them.

A table kept by something else, a source topic (``app.table(..., source=topic)``, see
:mod:`streamer.table_sources`) or a join (:mod:`streamer.table_joins`), refuses writes from
agents. Joins follow a table's changes through :meth:`Table.on_change`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import StreamerError
from .events import Event
from .partitioner import KeyPartitioner
from .serialization import Codec, codec_for
from .state import MISSING, CachedStore, Store, TableError
from .streams import PROCESSING
from .topics import AUTO_KEY, Topic

if TYPE_CHECKING:
    from .app import App
    from .windowed_tables import WindowedTable

__all__ = ["PartitionRevokedError", "Table", "TablePartitionStatistics", "TableStatistics"]

StoreKind = Literal["rocksdb", "memory"]


class PartitionRevokedError(TableError):  # type: ignore[misc]  # streamer.state is Any to mypy
    """The event's partition moved to another worker while the agent worked on it: its
    offset was not committed, so the new owner processes it again. The agent skips it."""


@dataclass(frozen=True, slots=True)
class TablePartitionStatistics:
    partition: int
    role: str  # "active", "standby" or "global"
    store: str  # "rocksdb" or "memory"
    keys: int  # estimated for RocksDB (plus keys cached and not yet written)
    bytes_on_disk: int
    changelog_offset: int  # the store's position in the changelog
    changelog_end_offset: int  # last seen end of the changelog partition (-1: unknown)
    recovering: bool
    recovered_records: int
    to_recover: int
    dirty_keys: int


@dataclass(frozen=True, slots=True)
class TableStatistics:
    name: str
    changelog_topic: str
    partitions: tuple[TablePartitionStatistics, ...]
    is_global: bool
    late_events: int  # windowed state: events after every window they belonged to closed


class _Recovery:
    """Restore progress of one partition, for statistics."""

    __slots__ = ("end_offset", "recovered", "recovering", "to_recover")

    def __init__(self) -> None:
        self.recovering = False
        self.recovered = 0
        self.to_recover = 0
        self.end_offset = -1


class Table:
    """A dict-like table; see the module docstring. Made by :meth:`App.table`."""

    def __init__(
        self,
        app: App,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        store: StoreKind | None = None,
        standby_replicas: int = 0,
        is_global: bool = False,
    ) -> None:
        if store not in (None, "rocksdb", "memory"):
            raise StreamerError(f"table {name!r}: store is 'rocksdb' or 'memory', not {store!r}")
        if standby_replicas < 0:
            raise StreamerError(f"table {name!r}: standby_replicas must be ≥ 0")
        if default is not None and not callable(default):
            raise StreamerError(f"table {name!r}: default must be callable (int, list, ...)")
        self.app = app
        self.name = name
        self.default = default
        self.key_codec: Codec = AUTO_KEY if key_type is None else codec_for(key_type)
        self.partition_key_codec: Codec = self.key_codec  # how a key's partition is found
        self.value_codec: Codec = codec_for(dict if value_type is None else value_type)
        self.store_kind = store
        self.standby_replicas = standby_replicas
        self.is_global = is_global
        self.changelog_topic = Topic(
            app, f"{app.id}-{name}-changelog", value_type=bytes, partitions=partitions,
            config={"cleanup.policy": "compact"}, internal=True,
        )  # fmt: skip
        self.partition_count = partitions or 0  # the changelog's, once the worker started
        # A topic whose partition count the changelog takes (an operator's state table).
        self.copartition_with: Topic | None = None
        self.active: dict[int, CachedStore] = {}  # partitions this worker serves
        self.standby: dict[int, Store] = {}  # partitions kept warm for another worker
        self.recovery: dict[int, _Recovery] = {}
        self.late_events = 0  # counted by the window operators that keep state here
        self._partitioner = KeyPartitioner()
        # What keeps the table (a source topic, a join), for the error a write from an
        # agent gets; and the joins following its changes. Either makes writes take the
        # slower path of _write (checked through one flag).
        self.kept_by: str | None = None
        self.listeners: list[Callable[[int, Any, Any], None]] = []
        self._hooked = False
        # Called with (partition, store) once a partition is restored and served, before any
        # event of it: a joined table built over tables that already hold rows.
        self.restored_hooks: list[Callable[[int, Store], None]] = []

    def __repr__(self) -> str:
        return f"<Table {self.name} ({len(self.active)} partitions here)>"

    # -- finding a key's partition ----------------------------------------------------------

    def _partition_of(self, key: Any) -> int:
        raw = self.partition_key_codec.dumps(key)
        if raw is None:
            raise TableError(f"table {self.name!r}: keys cannot be None")
        return self._partitioner.partition(raw, self.partition_count)

    def store_for(self, key: Any) -> CachedStore:
        """The partition ``key`` is read or written in (checked against the event's)."""
        tracker = PROCESSING.get()
        event = tracker.event if tracker is not None else None
        if event is not None and not self.is_global:
            store = self.active.get(event.partition)
            if store is not None and key in store.cache:
                return store  # checked when it was first seen
            expected = self._partition_of(key)
            if expected != event.partition:
                raise self._wrong_partition(key, expected, event)
            if store is None:
                raise PartitionRevokedError(
                    f"table {self.name!r}: partition {event.partition} is no longer this "
                    "worker's"
                )
            return store
        partition = self._partition_of(key)
        store = self.active.get(partition)
        if store is None:
            raise TableError(
                f"table {self.name!r}: key {key!r} is in partition {partition}, which this "
                f"worker does not hold (it holds {sorted(self.active) or 'none'})"
            )
        return store

    def _wrong_partition(self, key: Any, expected: int, event: Event) -> TableError:
        return TableError(
            f"table {self.name!r}: key {key!r} belongs in partition {expected} of "
            f"{self.partition_count}, but the event came from {event.topic}[{event.partition}]. "
            "A table must be updated from a stream partitioned by the table's key, with as "
            f"many partitions ({self.partition_count}): re-key the stream first, e.g. "
            "stream.group_by(lambda value: <the table key>, name='...', "
            f"partitions={self.partition_count}), or declare the table with partitions= "
            "equal to the topic's"
        )

    # -- the mapping ------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        value = self.store_for(key).get(key)
        if value is MISSING:
            if self.default is None:
                raise KeyError(key)
            return self.default()
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.store_for(key).get(key)
        return default if value is MISSING else value

    def __contains__(self, key: Any) -> bool:
        return self.store_for(key).get(key) is not MISSING

    def __setitem__(self, key: Any, value: Any) -> None:
        if self._hooked:
            self._write(key, value)
        else:
            self.store_for(key).set(key, value)

    def __delitem__(self, key: Any) -> None:
        store = self.store_for(key)
        if store.get(key) is MISSING:
            raise KeyError(key)
        if self._hooked:
            self._write(key, MISSING)
        else:
            store.delete(key)

    def pop(self, key: Any, default: Any = MISSING) -> Any:
        store = self.store_for(key)
        value = store.get(key)
        if value is MISSING:
            if default is MISSING:
                raise KeyError(key)
            return default
        if self._hooked:
            self._write(key, MISSING)
        else:
            store.delete(key)
        return value

    def update(self, other: Mapping[Any, Any]) -> None:
        for key, value in other.items():
            self[key] = value

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Keys and values of the partitions this worker holds."""
        for partition in sorted(self.active):
            yield from self.active[partition].items()

    def keys(self) -> Iterator[Any]:
        return (key for key, _ in self.items())

    def values(self) -> Iterator[Any]:
        return (value for _, value in self.items())

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.items())

    def as_dict(self) -> dict[Any, Any]:
        return dict(self.items())

    # -- changes: source topics and joins ---------------------------------------------------

    def on_change(self, listener: Callable[[int, Any, Any], None]) -> None:
        """Call ``listener(partition, key, value)`` after every write of a row (``value`` is
        ``MISSING`` for a delete), in the task that wrote it: from agents, and from the
        source topic of a table that has one. Restores do not call it."""
        self.listeners.append(listener)
        self._hooked = True

    def keep(self, by: str) -> None:
        """Refuse writes from agents: ``by`` (a source topic, a join) keeps the rows."""
        self.kept_by = by
        self._hooked = True

    def apply(self, partition: int, key: Any, value: Any) -> None:
        """Set (``value`` is ``MISSING``: delete) a row of ``partition`` as what keeps the
        table does, and tell the listeners."""
        cached = self.active.get(partition)
        if cached is None:
            raise PartitionRevokedError(
                f"table {self.name!r}: partition {partition} is no longer this worker's"
            )
        if value is MISSING:
            cached.delete(key)
        else:
            cached.set(key, value)
        for listener in self.listeners:
            listener(partition, key, value)

    def _write(self, key: Any, value: Any) -> None:
        if self.kept_by is not None:
            raise TableError(
                f"table {self.name!r} is kept by {self.kept_by}: agents cannot write it"
            )
        store = self.store_for(key)  # checks the key against the event's partition
        if value is MISSING:
            store.delete(key)
        else:
            store.set(key, value)
        partition = self._partition_of(key)
        for listener in self.listeners:
            listener(partition, key, value)

    # -- windows ----------------------------------------------------------------------------

    def join(self, other: Table, **options: Any) -> Any:
        """A table joined with another (``how="inner"|"left"|"outer"``; ``on=fn(value)``
        for a foreign key): see :mod:`streamer.table_joins`."""
        from .table_joins import join_tables

        return join_tables(self, other, **options)

    def tumbling(self, size: float, *, expires: float | None = None) -> WindowedTable:
        """This table, windowed: values per ``size``-second window of event time (see
        :mod:`streamer.windowed_tables`); windows are deleted ``expires`` seconds after
        their end (default: one size)."""
        from .windowed_tables import windowed

        return windowed(self, "tumbling", size, None, expires)

    def hopping(self, size: float, step: float, *, expires: float | None = None
                ) -> WindowedTable:
        """Like :meth:`tumbling`, with ``size``-second windows starting every ``step``."""
        from .windowed_tables import windowed

        return windowed(self, "hopping", size, step, expires)

    # -- statistics -------------------------------------------------------------------------

    def statistics(self) -> TableStatistics:
        entries = []
        role = "global" if self.is_global else "active"
        for partition, cached in sorted(self.active.items()):
            entries.append(self._partition_statistics(partition, role, cached.store, cached))
        for partition, store in sorted(self.standby.items()):
            entries.append(self._partition_statistics(partition, "standby", store, None))
        return TableStatistics(self.name, self.changelog_topic.name, tuple(entries),
                               self.is_global, self.late_events)

    def _partition_statistics(
        self, partition: int, role: str, store: Store, cached: CachedStore | None
    ) -> TablePartitionStatistics:
        recovery = self.recovery.get(partition) or _Recovery()
        stats = store.statistics()
        dirty = len(cached.dirty) if cached is not None else 0
        return TablePartitionStatistics(
            partition, role, stats.kind, stats.keys + dirty, stats.bytes_on_disk,
            stats.changelog_offset, recovery.end_offset, recovery.recovering,
            recovery.recovered, recovery.to_recover, dirty,
        )  # fmt: skip

    # -- used by the runtime (streamer.changelogs) ------------------------------------------

    def cached(self, store: Store) -> CachedStore:
        return CachedStore(
            store,
            dumps_key=self.key_codec.dumps, loads_key=self.key_codec.loads,
            dumps_value=self.value_codec.dumps, loads_value=self.value_codec.loads,
        )  # fmt: skip
