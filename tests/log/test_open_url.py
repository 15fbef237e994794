"""Log.open_url: the broker URLs of DESIGN.md §4 that name an embedded log."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamer.log import Log, MemoryFilesystem, OsFilesystem


def test_memory_url_is_in_memory() -> None:
    log = Log.open_url("memory://")
    assert isinstance(log.fs, MemoryFilesystem)
    log.create_topic("t")
    assert log.topic_names() == ["t"]
    log.close()


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_path_and_file_urls_are_durable(tmp_path: Path, prefix: str) -> None:
    with Log.open_url(f"{prefix}{tmp_path}") as log:
        assert isinstance(log.fs, OsFilesystem)
        log.create_topic("t", partitions=3)
    with Log.open_url(f"{prefix}{tmp_path}") as log:
        assert log.topic("t").partitions == 3


def test_kafka_url_is_refused() -> None:
    with pytest.raises(ValueError, match="remote broker"):
        Log.open_url("kafka://127.0.0.1:9092")
