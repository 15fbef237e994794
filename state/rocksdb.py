"""A store in RocksDB, through rocksdict: one database per (table, partition).

The data lives in the default column family as raw bytes; the changelog offset in a column
family of its own (``streamer``), written in the same ``WriteBatch``. The write-ahead log is
off, as in Kafka Streams: the changelog is the store's log. A crash loses the memtables, and
with them data and offset together (the two column families flush atomically), so the store
reopens at an older, consistent position and the changelog replays the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from typing import Any

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from .errors import StoreError
from .store import Store

__all__ = ["RocksDBStore"]

logger = logging.getLogger("streamer.state")

META_FAMILY = "streamer"
OFFSET_KEY = b"changelog_offset"


def _options() -> Any:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # With the WAL off, only flushed memtables survive a crash; the data's and the offset's
    # column families must flush together, or the offset could survive without its data.
    options.set_atomic_flush(True)
    return options


class RocksDBStore(Store):
    kind = "rocksdb"

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            self._db: Any = Rdict(path, _options(), column_families={META_FAMILY: _options()})
        except Exception as error:  # rocksdict raises plain Exception
            raise StoreError(f"cannot open the RocksDB store at {path}: {error}") from error
        write_options = WriteOptions()
        write_options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property
        self._db.set_write_options(write_options)
        self._meta: Any = self._db.get_column_family(META_FAMILY)
        self._meta_handle: Any = self._db.get_column_family_handle(META_FAMILY)
        raw = self._meta.get(OFFSET_KEY)
        self._changelog_offset = int(raw) if raw is not None else 0

    @property
    def changelog_offset(self) -> int:
        return self._changelog_offset

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for key, value in changes:
            if value is None:
                delete(key)
            else:
                put(key, value)
        put(OFFSET_KEY, str(changelog_offset).encode(), self._meta_handle)
        self._db.write(batch)
        self._changelog_offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        items: Iterator[tuple[bytes, bytes]] = iter(self._db.items())
        return items

    def keys_count(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def bytes_on_disk(self) -> int:
        total = 0
        for folder, _, files in os.walk(self.path):
            for name in files:
                with contextlib.suppress(OSError):  # compaction removed it meanwhile
                    total += os.path.getsize(os.path.join(folder, name))
        return total

    def clear(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.__init__(self.path)  # type: ignore[misc]  # reopen empty, same object

    def close(self) -> None:
        """Flush the memtables (the WAL is off) and release the database's lock."""
        db = self._db
        if db is None:
            return
        try:
            db.flush()
        finally:
            self._meta.close()
            db.close()
            self._db = self._meta = self._meta_handle = None
