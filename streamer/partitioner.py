"""Which partition a keyed record goes to: Kafka's default partitioner (murmur2 of the key
bytes), so streamer, the Java client, librdkafka's ``murmur2_random`` and aiokafka agree on
where a key lives; unkeyed records are spread round-robin."""

from __future__ import annotations

from typing import Final

__all__ = ["KeyPartitioner", "murmur2"]

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF
_SEED: Final = 0x9747B28C
KEY_CACHE_MAX: Final = 100_000  # distinct keys remembered per partition count


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Utils.murmur2): a signed 32-bit hash of ``data``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    full = length & ~3
    for i in range(0, full, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[full + 2] << 16
    if rest >= 2:
        h ^= data[full + 1] << 8
    if rest >= 1:
        h ^= data[full]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


class KeyPartitioner:
    """Partition choice with a bounded cache: apps see the same keys again and again."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._next = 0

    def partition(self, key: bytes | None, partitions: int) -> int:
        if key is None:
            self._next = (self._next + 1) % partitions
            return self._next
        found = self._cache.get((key, partitions))
        if found is None:
            if len(self._cache) >= KEY_CACHE_MAX:
                self._cache.clear()
            found = self._cache[(key, partitions)] = (murmur2(key) & 0x7FFFFFFF) % partitions
        return found
