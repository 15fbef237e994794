"""Test-wide settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.broker_process import BrokerProcess, running_broker

# In CI, hypothesis replays the same examples on every run, so a red CI is always
# reproducible; locally it explores new ones each time (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A ``streamer broker`` subprocess on a free loopback port, with its own data folder."""
    with running_broker(tmp_path / "broker-data") as process:
        yield process
