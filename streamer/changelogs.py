"""The worker's side of tables: stores opened per partition, restored from changelogs,
kept warm as standbys, and written at checkpoints.

- **Assigned** partitions (and every partition of a global table) open their store and
  replay the changelog from the store's offset to the end before any event is processed. A
  rich progress bar (on a terminal) or a log line every few seconds shows it; statistics
  report it.
- **Standby** partitions (``standby_replicas``, named by the ``streamer`` assignor) and
  global tables are tailed by a background task, so a worker that takes a partition over
  replays only what its standby had not applied yet.
- **Checkpoints**: :meth:`Tables.take_changes` collects the dirty keys, :meth:`Tables.send`
  writes them to the changelog, and once the log acknowledged them
  :meth:`Tables.write` records them in the stores with the changelog's end offset.
- **Exactly once** (:mod:`streamer.exactly_once`): changelogs are read ``read_committed``
  (restores stop at the last stable offset and skip aborted transactions),
  :meth:`Tables.write` runs once the checkpoint's transaction committed, and an aborted one
  sends the caches back to their stores (:meth:`Tables.drop_uncommitted`).

Stores live under ``<state root>/worker-<n>/<table>/<partition>``; ``n`` is the first slot
whose lock file no other process holds, so two workers on one machine never share a RocksDB
database and a restarted worker finds its own again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from .events import TopicPartition
from .state import MemoryStore, RocksDBStore, Store, StoreError
from .tables import Table, _Recovery
from .transport import PartitionReader, TopicSpec

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["StateDirectory", "Tables"]

logger = logging.getLogger("streamer.tables")

RESTORE_RECORDS_MAX = 50_000  # records applied per store write while restoring
RESTORE_FETCH_TIMEOUT_MS = 200
TAIL_FETCH_TIMEOUT_MS = 200
TAIL_RECORDS_MAX = 10_000
PROGRESS_LOG_INTERVAL_S = 5.0
STATE_SLOTS_MAX = 64  # workers of one app sharing a state root


class StateDirectory:
    """``<root>/worker-<n>``, held with a lock file for as long as the worker runs."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.path = ""
        self._fd: int | None = None

    def acquire(self) -> str:
        if self._fd is not None:
            return self.path
        os.makedirs(self.root, exist_ok=True)
        for slot in range(STATE_SLOTS_MAX):
            fd = os.open(os.path.join(self.root, f"worker-{slot}.lock"), os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fd = fd
            self.path = os.path.join(self.root, f"worker-{slot}")
            return self.path
        raise StoreError(f"{self.root}: {STATE_SLOTS_MAX} workers already hold a state slot")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


class Tables:
    """The tables of one worker; see the module docstring."""

    def __init__(self, worker: Worker, state_root: str | None) -> None:
        self.worker = worker
        self.tables: list[Table] = []  # the app's, once started (operators add theirs late)
        self.state = StateDirectory(state_root) if state_root is not None else None
        self._tail_reader: PartitionReader | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._tailed: dict[TopicPartition, tuple[Table, Store]] = {}

    @property
    def standby_replicas(self) -> int:
        return max((t.standby_replicas for t in self.tables if not t.is_global), default=0)

    def _transport(self) -> Any:
        transport = self.worker.transport
        assert transport is not None, "the worker's transport is not started"
        return transport

    def _reader(self) -> PartitionReader:
        isolation = self.worker.isolation_level
        reader: PartitionReader = self._transport().reader(
            **({} if isolation is None else {"isolation_level": isolation}))
        return reader

    def state_path(self) -> str | None:
        """This worker's state slot, ``<root>/worker-<n>`` (taken on the first call and
        held until :meth:`close`), or None without a state root (``memory://``)."""
        if self.state is None:
            return None
        if not self.state.path:
            logger.info("table state in %s", self.state.acquire())
        return self.state.path

    async def start(self) -> None:
        """Learn each changelog's partitions; restore global tables; start tailing."""
        self.tables = list(self.worker.app.tables.values())
        if not self.tables:
            return
        self.state_path()
        transport = self._transport()
        await self._create_changelogs()
        for table in self.tables:
            table.partition_count = transport.partition_count(table.changelog_topic.name)
        self._tail_reader = self._reader()
        global_tables = [t for t in self.tables if t.is_global]
        if global_tables:
            opened = [(t, p, self._open(t, p)) for t in global_tables
                      for p in range(t.partition_count)]
            await self._restore(opened)
            for table, partition, store in opened:
                table.active[partition] = table.cached(store)
                self._tail(table, partition, store)
        self._tail_task = asyncio.ensure_future(self._tail_loop())

    async def _create_changelogs(self) -> None:
        """Operators' state tables take their stream topic's partition count; tables
        declared without one take the most partitions among the topics agents read."""
        transport = self._transport()
        routed = [transport.partition_count(name) for name in self.worker.routed_topics()]
        for table in self.tables:
            source = table.copartition_with
            topic = table.changelog_topic
            if source is not None:
                count = transport.partition_count(source.name)
            elif topic.name in self.worker.app.topics:
                continue  # declared with its partitions (or global): created with the app's
            else:
                count = max(routed, default=1)
            topic.partitions = count
            created = await transport.ensure_topics(
                [TopicSpec(topic.name, count, topic.config)]
            )
            if created[topic.name] != count and source is not None:
                raise StoreError(
                    f"{topic.name} has {created[topic.name]} partitions but {source.name} has "
                    f"{count}: the window state must be partitioned like its stream; delete "
                    "the changelog topic (its state is rebuilt from the input) or re-key"
                )

    def _open(self, table: Table, partition: int) -> Store:
        kind = table.store_kind or ("memory" if self.state is None else "rocksdb")
        if kind == "memory":
            return MemoryStore()
        if self.state is None:
            raise StoreError(f"table {table.name!r}: store='rocksdb' needs a durable log "
                             "(a folder or kafka:// broker), not memory://")
        return RocksDBStore(os.path.join(self.state.path, table.name, str(partition)))

    # -- rebalances -------------------------------------------------------------------------

    async def assign(self, numbers: frozenset[int], standby: frozenset[int]) -> None:
        """Open and restore the assigned partitions; tail the standby ones."""
        opened: list[tuple[Table, int, Store]] = []
        for table in self.tables:
            if table.is_global:
                continue
            for partition in sorted(numbers):
                if partition >= table.partition_count or partition in table.active:
                    continue
                store = table.standby.pop(partition, None)
                if store is not None:
                    self._untail(table, partition)
                else:
                    store = self._open(table, partition)
                opened.append((table, partition, store))
        await self._restore(opened)
        for table, partition, store in opened:
            table.active[partition] = table.cached(store)
        for table, partition, store in opened:  # tables in declaration order: inputs first
            for hook in table.restored_hooks:
                hook(partition, store)
        for table in self.tables:
            if table.is_global or table.standby_replicas == 0:
                continue
            for partition in sorted(standby - numbers):
                if partition < table.partition_count and partition not in table.standby:
                    store = self._open(table, partition)
                    table.standby[partition] = store
                    self._tail(table, partition, store)

    def revoke(self, numbers: frozenset[int]) -> None:
        """Close the stores of partitions that moved away (after their checkpoint). Their
        standby stores stay, re-tailed, when this worker still keeps them warm."""
        for table in self.tables:
            if table.is_global:
                continue
            for partition in sorted(numbers):
                cached = table.active.pop(partition, None)
                if cached is not None:
                    # Changes still dirty come from events processed after the revocation's
                    # checkpoint took its offsets: uncommitted, so the next owner redoes them.
                    cached.dirty.clear()
                    cached.store.close()
                    table.recovery.pop(partition, None)
            for partition in list(table.standby):  # the next assignment names new ones
                self._untail(table, partition)
                table.standby.pop(partition).close()

    # -- checkpoints ------------------------------------------------------------------------

    def take_changes(self) -> list[tuple[Table, int, list[tuple[bytes, bytes | None]]]]:
        """Every dirty key of every partition held here, encoded; clean from now on."""
        changes = []
        for table in self.tables:
            for partition, cached in table.active.items():
                if cached.dirty:
                    changes.append((table, partition, cached.take_changes()))
        return changes

    async def send(self, changes: list[tuple[Table, int, list[tuple[bytes, bytes | None]]]]
                   ) -> None:
        send = self.worker.send
        for table, partition, records in changes:
            topic = table.changelog_topic.name
            if table.is_global:  # written anywhere: each key to its own partition
                for key, value in records:
                    await send(topic, key, value, (), None, None)
            else:
                await self.worker.send_all(topic, partition, records)

    async def write(self, changes: list[tuple[Table, int, list[tuple[bytes, bytes | None]]]]
                    ) -> None:
        """Record acknowledged changes in the stores, with the changelog's end offsets."""
        if not changes:
            return
        reader = self._tail_reader
        assert reader is not None
        local = [(t, p, c) for t, p, c in changes if not t.is_global]
        ends = await reader.end_offsets(
            [TopicPartition(t.changelog_topic.name, p) for t, p, _ in local]
        )
        for table, partition, records in local:
            cached = table.active.get(partition)
            if cached is None:
                continue  # revoked meanwhile: the changelog has it, the next owner restores
            end = ends[TopicPartition(table.changelog_topic.name, partition)]
            cached.store.write(records, end)
            cached.trim()
        # Global tables: the tail applies every partition's records, ours included.

    def drop_uncommitted(self) -> None:
        """Forget every change not in a store yet (an aborted or fenced transaction): each
        served partition gets a fresh cache over its store, so tables and window operators
        (which rebuild from a new cache) read the last committed state again."""
        for table in self.tables:
            for partition, cached in list(table.active.items()):
                table.active[partition] = table.cached(cached.store)

    # -- restoring --------------------------------------------------------------------------

    async def _restore(self, opened: list[tuple[Table, int, Store]]) -> None:
        if not opened:
            return
        reader = self._reader()
        try:
            await _Restore(reader, opened, self.worker).run()
        finally:
            await reader.close()

    # -- tailing: standbys and global tables ------------------------------------------------

    def _tail(self, table: Table, partition: int, store: Store) -> None:
        tp = TopicPartition(table.changelog_topic.name, partition)
        self._tailed[tp] = (table, store)
        assert self._tail_reader is not None
        self._tail_reader.assign({tp: store.changelog_offset})

    def _untail(self, table: Table, partition: int) -> None:
        tp = TopicPartition(table.changelog_topic.name, partition)
        if self._tailed.pop(tp, None) is not None and self._tail_reader is not None:
            self._tail_reader.unassign([tp])

    async def _tail_loop(self) -> None:
        reader = self._tail_reader
        assert reader is not None
        while True:
            try:
                batches = await reader.fetch(TAIL_FETCH_TIMEOUT_MS, TAIL_RECORDS_MAX)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the log went away for a moment: try again
                logger.warning("tailing changelogs failed: %s; retrying", error)
                await asyncio.sleep(1.0)
                continue
            for tp, events in batches:
                tailed = self._tailed.get(tp)
                if tailed is None or not events:
                    continue
                table, store = tailed
                # A source topic (global table) may hold records without a key: not rows.
                store.write([(e.key, e.value) for e in events if e.key is not None],
                            events[-1].offset + 1)
                if table.is_global:
                    cached = table.active.get(tp.partition)
                    if cached is not None:
                        _forget_clean(cached, [e.key for e in events])

    async def close(self) -> None:
        if self._tail_task is not None:
            self._tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail_task
        if self._tail_reader is not None:
            with contextlib.suppress(Exception):
                await self._tail_reader.close()
        for table in self.tables:
            for cached in table.active.values():
                cached.store.close()
            for store in table.standby.values():
                store.close()
            table.active.clear()
            table.standby.clear()
        if self.state is not None:
            self.state.release()


def _forget_clean(cached: Any, raw_keys: list[bytes | None]) -> None:
    """A global table's tail applied these keys: drop their clean cached values."""
    loads_key = cached.loads_key
    for raw in raw_keys:
        if raw is None:
            continue
        key = loads_key(raw)
        if key not in cached.dirty:
            cached.cache.pop(key, None)


class _Restore:
    """Replays changelog partitions into their stores up to the end offsets seen at start."""

    def __init__(self, reader: PartitionReader, opened: list[tuple[Table, int, Store]],
                 worker: Worker) -> None:
        self.reader = reader
        self.worker = worker
        self.stores = {
            TopicPartition(table.changelog_topic.name, partition): (table, partition, store)
            for table, partition, store in opened
        }

    async def run(self) -> None:
        ends = await self.reader.end_offsets(list(self.stores))
        pending: dict[TopicPartition, int] = {}
        for tp, (table, partition, store) in self.stores.items():
            recovery = table.recovery.setdefault(partition, _Recovery())
            end = recovery.end_offset = ends[tp]
            if store.changelog_offset > end:  # the changelog was recreated or truncated
                logger.warning("%s: store at offset %d but the changelog ends at %d; "
                               "restoring from the start", tp, store.changelog_offset, end)
                store.clear()
            if store.changelog_offset < end:
                pending[tp] = store.changelog_offset
                recovery.recovering = True
                recovery.recovered = 0
                recovery.to_recover = end - store.changelog_offset
        if not pending:
            return
        total = sum(ends[tp] - offset for tp, offset in pending.items())
        started = time.monotonic()
        logger.info("restoring %d table partitions: %d changelog records",
                    len(pending), total)
        previous_state = self.worker.state
        self.worker.state = "recovering"
        self.reader.assign(pending)
        with _progress(total) as advance:
            while pending:
                done = await self._step(pending, ends, advance)
                for tp in done:
                    del pending[tp]
                    self.reader.unassign([tp])
        self.worker.state = previous_state
        elapsed = time.monotonic() - started
        logger.info("restored %d records in %.2fs (%.0f records/s)", total, elapsed,
                    total / elapsed if elapsed > 0 else 0)

    async def _step(self, pending: dict[TopicPartition, int], ends: dict[TopicPartition, int],
                    advance: Any) -> list[TopicPartition]:
        batches = await self.reader.fetch(RESTORE_FETCH_TIMEOUT_MS, RESTORE_RECORDS_MAX)
        for tp, events in batches:
            if tp not in pending or not events:
                continue
            table, partition, store = self.stores[tp]
            end = ends[tp]
            position = min(events[-1].offset + 1, end)
            store.write([(e.key, e.value) for e in events
                         if e.offset < end and e.key is not None], position)
            recovery = table.recovery[partition]
            moved = position - pending[tp]
            recovery.recovered += moved
            pending[tp] = position
            advance(moved)
        done = []
        for tp, position in pending.items():
            if position >= ends[tp]:
                done.append(tp)
        if not batches:  # nothing came: the rest may be compacted away or control batches
            for tp in list(pending):
                if tp in done:
                    continue
                reached = await self._reached(tp, ends[tp])
                if reached:
                    done.append(tp)
        for tp in done:
            table, partition, store = self.stores[tp]
            if store.changelog_offset < ends[tp]:
                store.write((), ends[tp])
            table.recovery[partition].recovering = False
        return done

    async def _reached(self, tp: TopicPartition, end: int) -> bool:
        """True when nothing readable is left below ``end`` (compacted or control)."""
        return await self.reader.position(tp) >= end


@contextlib.contextmanager
def _progress(total: int) -> Any:
    """A rich progress bar on a terminal; otherwise a log line every few seconds."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

        with Progress("restoring tables", BarColumn(), TaskProgressColumn(),
                      TimeRemainingColumn(), transient=True) as progress:
            task = progress.add_task("restore", total=total)
            yield lambda n: progress.advance(task, n)
        return
    done = [0, time.monotonic()]

    def advance(n: int) -> None:
        done[0] += n
        if time.monotonic() - done[1] >= PROGRESS_LOG_INTERVAL_S:
            done[1] = time.monotonic()
            logger.info("restoring tables: %d of %d records (%.0f%%)", done[0], total,
                        100 * done[0] / total)

    yield advance
