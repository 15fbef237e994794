"""OsFilesystem: appends reserve blocks ahead without changing the file's size."""

from __future__ import annotations

import os
from pathlib import Path

from streamer.log import OsFilesystem
from streamer.log.fs import PREALLOCATE_BYTES_MAX, PREALLOCATE_FROM_BYTES


def _allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_reserve_ahead_keeps_size_and_is_given_back(tmp_path: Path) -> None:
    path = tmp_path / "segment.log"
    handle = OsFilesystem().open(str(path))
    chunk = os.urandom(64 * 1024)
    written = 0
    while written < 4 * PREALLOCATE_FROM_BYTES:
        handle.append([chunk[:16], memoryview(chunk)[16:]])
        written += len(chunk)
    handle.fsync()
    assert os.stat(path).st_size == written == handle.size()
    reserved = _allocated_bytes(path) - written
    assert 0 < reserved <= PREALLOCATE_BYTES_MAX + len(chunk)  # blocks past the end
    assert handle.pread(len(chunk), written - len(chunk)) == chunk
    handle.close()
    assert os.stat(path).st_size == written
    assert _allocated_bytes(path) < written + 64 * 1024  # the reserve went back at close
    assert path.read_bytes() == chunk * (written // len(chunk))


def test_truncate_drops_data_and_reserve(tmp_path: Path) -> None:
    path = tmp_path / "segment.log"
    handle = OsFilesystem().open(str(path))
    for _ in range(40):
        handle.append([os.urandom(64 * 1024)])
    handle.truncate(1000)
    assert handle.size() == os.stat(path).st_size == 1000
    assert _allocated_bytes(path) <= 4096
    handle.append([b"x" * 10])
    assert handle.size() == 1010
    handle.close()
    assert os.stat(path).st_size == 1010
