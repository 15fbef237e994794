"""Fixtures for the storage-engine tests: a log over a MemoryFilesystem and a ManualClock."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from streamer.log import Log, ManualClock, MemoryFilesystem, PartitionLog

from .batches import ROOT, PartitionFactory


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fs() -> MemoryFilesystem:
    return MemoryFilesystem()


@pytest.fixture
def log(fs: MemoryFilesystem, clock: ManualClock) -> Iterator[Log]:
    opened = Log.open(ROOT, fs=fs, clock=clock)
    yield opened
    opened.close()


@pytest.fixture
def make_partition(log: Log) -> PartitionFactory:
    """Create a one-partition topic with Kafka-named ``config`` and return its partition."""
    counter = itertools.count()

    def make(config: Mapping[str, Any] | None = None, *, topic: str | None = None) -> PartitionLog:
        name = topic or f"topic-{next(counter)}"
        log.create_topic(name, 1, config)
        return log.partition(name, 0)

    return make


@pytest.fixture
def partition(make_partition: PartitionFactory) -> PartitionLog:
    return make_partition()
