"""A write-back cache over a store: decoded values in a dict, written at checkpoints.

Agents read and write Python objects; the cache keeps them, so a hot key costs a dict lookup
per event instead of a RocksDB read, a decode, an encode and a write. Changed keys are
marked dirty; :meth:`CachedStore.take_changes` hands their encoded bytes to the checkpoint,
which sends them to the changelog (one record per key, however often it changed) and then
writes them to the store. Clean entries are dropped when the cache grows past its bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .store import Store

__all__ = ["CACHE_KEYS_MAX", "MISSING", "CachedStore"]

# Keys kept decoded per partition between checkpoints (dirty keys are never dropped).
CACHE_KEYS_MAX = 100_000


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a key known to be absent (cached), or deleted (dirty)
_NOT_CACHED: Any = object()


class CachedStore:
    """One table partition's store with a write-back cache of decoded values."""

    __slots__ = ("cache", "dirty", "dumps_key", "dumps_value", "keys_max", "loads_key",
                 "loads_value", "store")

    def __init__(
        self,
        store: Store,
        *,
        dumps_key: Callable[[Any], bytes | None],
        loads_key: Callable[[bytes], Any],
        dumps_value: Callable[[Any], bytes | None],
        loads_value: Callable[[bytes], Any],
        keys_max: int = CACHE_KEYS_MAX,
    ) -> None:
        self.store = store
        self.dumps_key = dumps_key
        self.loads_key = loads_key
        self.dumps_value = dumps_value
        self.loads_value = loads_value
        self.keys_max = keys_max
        self.cache: dict[Any, Any] = {}
        self.dirty: set[Any] = set()

    def get(self, key: Any) -> Any:
        """The value, or MISSING."""
        value = self.cache.get(key, _NOT_CACHED)
        if value is _NOT_CACHED:
            value = self.load(key)
        return value

    def load(self, key: Any) -> Any:
        raw_key = self.dumps_key(key)
        assert raw_key is not None, "table keys are not None"
        raw = self.store.get(raw_key)
        value = MISSING if raw is None else self.loads_value(raw)
        cache = self.cache
        if len(cache) >= self.keys_max and len(cache) - len(self.dirty) >= self.keys_max // 2:
            # A table only read (a join's lookups) has no checkpoint to trim it: reads
            # keep it bounded too, misses included. (Only when half the bound is clean
            # entries: with many changes pending, trimming at every read would cost more
            # than it frees.)
            self.cache = {key: cache[key] for key in self.dirty}
        self.cache[key] = value
        return value

    def set(self, key: Any, value: Any) -> None:
        self.cache[key] = value
        self.dirty.add(key)

    def delete(self, key: Any) -> None:
        self.cache[key] = MISSING
        self.dirty.add(key)

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        """The dirty keys' encoded bytes (None: deleted); they are clean from now on."""
        cache, dumps_key, dumps_value = self.cache, self.dumps_key, self.dumps_value
        changes: list[tuple[bytes, bytes | None]] = []
        for key in self.dirty:
            value = cache[key]
            raw_key = dumps_key(key)
            assert raw_key is not None
            changes.append((raw_key, None if value is MISSING else dumps_value(value)))
        self.dirty = set()
        return changes

    def trim(self) -> None:
        """Drop clean entries once the cache is at its bound."""
        if len(self.cache) >= self.keys_max:
            dirty = self.dirty
            self.cache = {key: self.cache[key] for key in dirty}

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every key and value: the store's, as the cache overrides them."""
        cache = self.cache
        seen = set()
        for raw_key, raw_value in self.store.items():
            key = self.loads_key(raw_key)
            seen.add(key)
            value = cache[key] if key in cache else self.loads_value(raw_value)
            if value is not MISSING:
                yield key, value
        for key, value in list(cache.items()):
            if key not in seen and value is not MISSING:
                yield key, value

    def drop_cache(self) -> None:
        """Forget cached values (after the store changed underneath: a restore)."""
        assert not self.dirty, "dirty keys would be lost"
        self.cache = {}
