"""A store in a dict: for ``memory://`` apps and tests. It is lost with the process, so a
restarted worker restores it from the changelog, from the beginning."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .store import Store

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._changelog_offset = 0

    @property
    def changelog_offset(self) -> int:
        return self._changelog_offset

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int) -> None:
        data = self._data
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._changelog_offset = changelog_offset

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def keys_count(self) -> int:
        return len(self._data)

    def bytes_on_disk(self) -> int:
        return 0

    def clear(self) -> None:
        self._data.clear()
        self._changelog_offset = 0

    def close(self) -> None:
        """Nothing to release: the data stays for a reopen in this process."""
