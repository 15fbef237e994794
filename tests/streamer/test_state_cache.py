"""CachedStore over a real RocksDB store: the write-back cache stays bounded, by reads alone
too (a table a join only looks up is never checkpointed, so nothing else trims it)."""

from __future__ import annotations

from pathlib import Path

from streamer.state import MISSING, CachedStore
from streamer.state.rocksdb import RocksDBStore


def _cached(path: Path, keys_max: int) -> CachedStore:
    return CachedStore(
        RocksDBStore(str(path)),
        dumps_key=str.encode, loads_key=bytes.decode,
        dumps_value=str.encode, loads_value=bytes.decode,
        keys_max=keys_max,
    )


def test_lookups_of_missing_keys_keep_the_cache_bounded(tmp_path: Path) -> None:
    cached = _cached(tmp_path / "db", keys_max=100)
    cached.store.write([(b"present", b"yes")], changelog_offset=1)
    for n in range(10_000):
        assert cached.get(f"absent-{n}") is MISSING
        assert len(cached.cache) <= 100
    assert cached.get("present") == "yes"
    cached.store.close()


def test_reads_past_the_bound_keep_unsaved_changes(tmp_path: Path) -> None:
    cached = _cached(tmp_path / "db", keys_max=10)
    cached.set("changed", "new")
    cached.delete("gone")
    for n in range(50):
        cached.get(f"k{n}")
    assert cached.get("changed") == "new"
    assert cached.get("gone") is MISSING
    assert sorted(cached.take_changes()) == [(b"changed", b"new"), (b"gone", None)]
    cached.store.close()


def test_many_pending_changes_do_not_make_every_read_trim(tmp_path: Path) -> None:
    """Past the bound with changes pending, reads trim only once half the bound is clean
    entries again: the cache is at most the changes plus that half."""
    cached = _cached(tmp_path / "db", keys_max=10)
    for n in range(30):
        cached.set(f"changed-{n}", str(n))
    for n in range(100):
        cached.get(f"read-{n}")
        assert len(cached.cache) <= 30 + 5
    assert len(cached.take_changes()) == 30
    cached.store.close()
