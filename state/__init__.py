"""streamer.state: state stores and the write-back cache over them.

- :class:`~streamer.state.store.Store`: one (table, partition) of raw bytes, with the
  changelog offset it reflects written atomically with the data;
- :class:`~streamer.state.rocksdb.RocksDBStore` (rocksdict) and
  :class:`~streamer.state.memory.MemoryStore`;
- :class:`~streamer.state.cache.CachedStore`: decoded values, flushed at checkpoints.

Everything here is synchronous; tables, changelogs and recovery, which talk to the log, are
in :mod:`streamer.tables` and :mod:`streamer.changelogs`.
"""

from .cache import CACHE_KEYS_MAX, MISSING, CachedStore
from .errors import StoreError, TableError
from .memory import MemoryStore
from .rocksdb import RocksDBStore
from .store import Store, StoreStatistics

__all__ = [
    "CACHE_KEYS_MAX",
    "MISSING",
    "CachedStore",
    "MemoryStore",
    "RocksDBStore",
    "Store",
    "StoreError",
    "StoreStatistics",
    "TableError",
]
