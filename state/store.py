"""The store interface: one (table, partition) of raw key/value bytes.

A store also keeps the changelog position it reflects, written in the same atomic batch as
the data: after a crash, whatever the store holds is a state the changelog passed through at
that position, and replaying the changelog from there brings it up to date. Replaying is
idempotent (each changelog record sets or deletes one key), so a position that is behind is
only slower, never wrong.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator

__all__ = ["Store", "StoreStatistics"]

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    kind: str  # "rocksdb" or "memory"
    keys: int  # estimated for RocksDB
    bytes_on_disk: int
    changelog_offset: int


class Store(abc.ABC):
    """Raw bytes of one table partition, and the changelog offset they reflect."""

    kind = "store"

    @property
    @abc.abstractmethod
    def changelog_offset(self) -> int:
        """The offset of the next changelog record to apply (0: nothing applied yet)."""

    @abc.abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        """Apply ``changes`` (a None value deletes the key) and record ``changelog_offset``,
        all in one atomic write."""

    @abc.abstractmethod
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...

    @abc.abstractmethod
    def keys_count(self) -> int: ...

    def bytes_on_disk(self) -> int:
        return 0

    @abc.abstractmethod
    def clear(self) -> None:
        """Forget everything, position included (the changelog no longer has it)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self.kind, self.keys_count(), self.bytes_on_disk(),
                               self.changelog_offset)
