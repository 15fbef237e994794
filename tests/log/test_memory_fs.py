"""MemoryFilesystem: the fake disk the crash tests rely on must itself behave."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from streamer.log import MemoryFilesystem, OsFilesystem


@pytest.fixture
def memfs() -> MemoryFilesystem:
    fs = MemoryFilesystem()
    fs.makedirs("/d/sub")
    return fs


def test_files_append_read_truncate(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f")
    assert handle.size() == 0
    handle.append([b"abc", bytearray(b"def"), memoryview(b"gh")])
    assert handle.size() == 8
    assert handle.pread(3, 2) == b"cde"
    assert handle.pread(100, 6) == b"gh"
    assert handle.pread(4, 50) == b""
    handle.truncate(4)
    assert memfs.read_file("/d/f") == b"abcd"
    assert memfs.open("/d/f").size() == 4  # a second handle sees the same file


def test_open_needs_the_directory(memfs: MemoryFilesystem) -> None:
    with pytest.raises(FileNotFoundError):
        memfs.open("/nowhere/f")
    with pytest.raises(FileNotFoundError):
        memfs.listdir("/nowhere")
    with pytest.raises(FileNotFoundError):
        memfs.read_file("/d/missing")
    with pytest.raises(FileNotFoundError):
        memfs.remove("/d/missing")


def test_directories(memfs: MemoryFilesystem) -> None:
    memfs.open("/d/a")
    memfs.open("/d/sub/b")
    assert memfs.listdir("/d") == ["a", "sub"]
    assert memfs.listdir("/d/sub") == ["b"]
    assert memfs.exists("/d/sub") and memfs.exists("/d/a") and memfs.exists("/d/")
    memfs.rename("/d/sub", "/d/moved")
    assert memfs.listdir("/d") == ["a", "moved"]
    assert memfs.listdir("/d/moved") == ["b"]
    assert not memfs.exists("/d/sub/b")
    memfs.rmtree("/d/moved")
    assert memfs.listdir("/d") == ["a"]
    memfs.remove("/d/a")
    assert memfs.listdir("/d") == []


def test_write_file_atomic_replaces(memfs: MemoryFilesystem) -> None:
    memfs.write_file_atomic("/d/meta", b"one")
    memfs.write_file_atomic("/d/meta", b"two")
    assert memfs.read_file("/d/meta") == b"two"
    assert memfs.crash().read_file("/d/meta") == b"two"


def test_crash_keeps_only_fsynced_bytes(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f")
    memfs.fsync_dir("/d")
    handle.append([b"durable"])
    handle.fsync()
    handle.append([b"-lost"])
    survivor = memfs.crash()
    assert survivor.read_file("/d/f") == b"durable"
    assert memfs.read_file("/d/f") == b"durable-lost"  # the original is untouched


def test_crash_drops_files_whose_entry_was_never_synced(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/new")
    handle.append([b"data"])
    handle.fsync()  # the content is synced, the directory entry is not
    survivor = memfs.crash()
    assert not survivor.exists("/d/new")
    assert survivor.listdir("/d") == ["sub"]


def test_renamed_files_survive(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f.tmp")
    handle.append([b"x"])
    handle.fsync()
    memfs.rename("/d/f.tmp", "/d/f")
    assert memfs.crash().read_file("/d/f") == b"x"


def test_truncate_lowers_the_synced_prefix(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f")
    memfs.fsync_dir("/d")
    handle.append([b"abcdef"])
    handle.fsync()
    handle.truncate(2)
    handle.append([b"XYZ"])
    assert memfs.crash().read_file("/d/f") == b"ab"


def test_crash_with_a_torn_tail(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f")
    memfs.fsync_dir("/d")
    handle.append([b"synced"])
    handle.fsync()
    handle.append([b"0123456789" * 5])
    tails = set()
    for seed in range(40):
        content = memfs.crash(random.Random(seed)).read_file("/d/f")
        assert content.startswith(b"synced")
        tail = content[len(b"synced") :]
        written = b"0123456789" * 5
        kept = next(i for i in range(len(written), -1, -1) if tail.startswith(written[:i]))
        tails.add((kept, len(tail) > kept))  # a prefix of the unsynced bytes, maybe garbage
    assert len({kept for kept, _ in tails}) > 5
    assert any(garbage for _, garbage in tails)


def test_capacity(memfs: MemoryFilesystem) -> None:
    memfs.capacity_bytes = 10
    handle = memfs.open("/d/f")
    handle.append([b"12345"])
    with pytest.raises(OSError) as raised:
        handle.append([b"123456"])
    assert raised.value.errno == 28
    assert memfs.read_file("/d/f") == b"12345"
    handle.append([b"67890"])
    assert memfs.used_bytes() == 10
    assert memfs.crash().capacity_bytes == 10


def test_injected_faults_fire_once(memfs: MemoryFilesystem) -> None:
    handle = memfs.open("/d/f")
    memfs.fail_next_write = OSError(5, "boom")
    with pytest.raises(OSError, match="boom"):
        handle.append([b"x"])
    assert handle.size() == 0
    handle.append([b"x"])
    memfs.fail_next_fsync = OSError(5, "sync")
    with pytest.raises(OSError, match="sync"):
        handle.fsync()
    memfs.fsync_dir("/d")
    assert memfs.crash().read_file("/d/f") == b""  # the failed fsync synced nothing
    handle.fsync()
    assert memfs.crash().read_file("/d/f") == b"x"


def test_os_filesystem_basics(tmp_path: Path) -> None:
    fs = OsFilesystem()
    fs.makedirs(str(tmp_path / "a" / "b"))
    handle = fs.open(str(tmp_path / "a" / "b" / "f"))
    handle.append([b"abc", memoryview(b"def")])
    handle.fsync()
    assert handle.size() == 6
    assert handle.pread(2, 4) == b"ef"
    handle.truncate(3)
    assert handle.size() == 3
    handle.append([b"Z"])
    handle.close()
    assert fs.read_file(str(tmp_path / "a" / "b" / "f")) == b"abcZ"
    assert fs.open(str(tmp_path / "a" / "b" / "f")).size() == 4
    fs.write_file_atomic(str(tmp_path / "a" / "meta"), b"m")
    assert fs.listdir(str(tmp_path / "a")) == ["b", "meta"]
    fs.rename(str(tmp_path / "a" / "meta"), str(tmp_path / "a" / "meta2"))
    fs.fsync_dir(str(tmp_path / "a"))
    assert fs.exists(str(tmp_path / "a" / "meta2"))
    fs.remove(str(tmp_path / "a" / "meta2"))
    fs.rmtree(str(tmp_path / "a"))
    assert not fs.exists(str(tmp_path / "a"))
