"""Fixtures for the group-coordinator tests: a real log, in memory, on the system clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from streamer.log import Log


@pytest.fixture
def log() -> Iterator[Log]:
    # Overrides tests/log's ManualClock log: these tests use real (short) timeouts.
    opened = Log.memory()
    yield opened
    opened.close()
