"""Keys land where Kafka's default partitioner puts them."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streamer.partitioner import KeyPartitioner, murmur2


@given(st.binary(max_size=64))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_known_kafka_values() -> None:
    # From Kafka's UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def test_partitioner_is_stable_and_spreads_unkeyed() -> None:
    partitioner = KeyPartitioner()
    assert partitioner.partition(b"user-1", 8) == partitioner.partition(b"user-1", 8)
    assert partitioner.partition(b"user-1", 8) == (murmur2(b"user-1") & 0x7FFFFFFF) % 8
    spread = {partitioner.partition(None, 4) for _ in range(8)}
    assert spread == {0, 1, 2, 3}
