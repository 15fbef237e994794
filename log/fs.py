"""The filesystem under the log, injectable so tests can crash it and fail it.

:class:`OsFilesystem` is the real one. :class:`MemoryFilesystem` keeps files in memory: it
backs ``memory://`` logs, and it remembers what was fsynced, so :meth:`MemoryFilesystem.crash`
can produce the filesystem a power cut would leave behind (unsynced tails lost or torn,
unsynced new files gone) and failures can be injected into the next write or fsync.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import shutil
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "FileHandle",
    "Filesystem",
    "MemoryFilesystem",
    "OsFilesystem",
    "read_json_object",
    "write_json",
]

Buffer = bytes | bytearray | memoryview


class FileHandle(Protocol):
    def append(self, parts: Sequence[Buffer]) -> None:
        """Write ``parts`` at the end of the file, all or nothing.

        On failure the file is truncated back to its old size and ``OSError`` is raised.
        """
        ...

    def pread(self, size: int, position: int) -> bytes: ...

    def size(self) -> int: ...

    def truncate(self, size: int) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class Filesystem(Protocol):
    def open(self, path: str) -> FileHandle:
        """Open ``path`` for reading and appending, creating it if missing."""
        ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]: ...

    def makedirs(self, path: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def rename(self, source: str, target: str) -> None:
        """Atomically replace ``target`` with ``source``."""
        ...

    def rmtree(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (new files, renames) durable."""
        ...

    def read_file(self, path: str) -> bytes: ...

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
        ...


def _load_fallocate() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux/glibc: files grow as they are written
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _load_fallocate()
_FALLOC_FL_KEEP_SIZE = 1
# A growing file reserves disk blocks ahead of its end, a quarter of its size up to this
# bound, with fallocate(KEEP_SIZE): the file's size stays the end of the data, but ext4 no
# longer allocates blocks on each write (measured: appends of 16 KiB batches ~10% faster,
# an fsync per MiB ~20%). Small files reserve nothing; close() gives the reserve back.
PREALLOCATE_FROM_BYTES = 1 << 20
PREALLOCATE_BYTES_MAX = 16 << 20


def read_json_object(fs: Filesystem, path: str) -> dict[str, Any] | None:
    """The JSON object stored in ``path``, or None if the file is missing or damaged."""
    if not fs.exists(path):
        return None
    try:
        data = json.loads(fs.read_file(path))
    except ValueError:  # torn or garbage bytes (UnicodeDecodeError is a ValueError too)
        return None
    return data if isinstance(data, dict) else None


def write_json(fs: Filesystem, path: str, value: dict[str, Any]) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically."""
    fs.write_file_atomic(path, json.dumps(value).encode())


class _OsFile:
    __slots__ = ("_allocated", "_fd", "_size")

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._allocated = self._size

    def _reserve(self, end: int) -> None:
        ahead = min(PREALLOCATE_BYTES_MAX, self._size // 4)
        if _fallocate is None or self._size < PREALLOCATE_FROM_BYTES:
            return
        if _fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, self._size, end - self._size + ahead):
            if ctypes.get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
                self._allocated = 1 << 62  # this filesystem cannot: stop asking
            return  # ENOSPC and the like: the write itself will say so
        self._allocated = end + ahead

    def append(self, parts: Sequence[Buffer]) -> None:
        total = sum(map(len, parts))
        start = self._size
        if start + total > self._allocated:
            self._reserve(start + total)
        try:
            written = os.writev(self._fd, parts)
            while written < total:  # rare: a short write; send what is left
                rest = b"".join(bytes(part) for part in parts)[written:]
                written += os.write(self._fd, rest)
        except OSError:
            os.ftruncate(self._fd, start)
            raise
        self._size = start + total

    def pread(self, size: int, position: int) -> bytes:
        return os.pread(self._fd, size, position)

    def size(self) -> int:
        return self._size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)  # also frees blocks reserved past ``size``
        self._size = self._allocated = size

    def fsync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        try:
            if self._allocated > self._size:
                os.ftruncate(self._fd, self._size)  # give the reserved blocks back
        finally:
            os.close(self._fd)


class OsFilesystem:
    """The operating system's filesystem."""

    def open(self, path: str) -> FileHandle:
        return _OsFile(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove(self, path: str) -> None:
        os.remove(path)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def rmtree(self, path: str) -> None:
        shutil.rmtree(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def write_file_atomic(self, path: str, data: bytes) -> None:
        temporary = path + ".tmp"
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self.fsync_dir(os.path.dirname(path) or ".")


class _MemoryFile:
    __slots__ = ("data", "entry_durable", "synced_bytes")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced_bytes = 0  # the prefix a crash keeps
        self.entry_durable = False  # whether a crash keeps the file at all


class _MemoryHandle:
    __slots__ = ("_file", "_fs")

    def __init__(self, fs: MemoryFilesystem, file: _MemoryFile) -> None:
        self._fs = fs
        self._file = file

    def append(self, parts: Sequence[Buffer]) -> None:
        self._fs.check_fault("write")
        total = sum(len(part) for part in parts)
        if self._fs.capacity_bytes is not None and self._fs.used_bytes() + total > (
            self._fs.capacity_bytes
        ):
            raise OSError(28, "No space left on device (MemoryFilesystem capacity)")
        for part in parts:
            self._file.data += part

    def pread(self, size: int, position: int) -> bytes:
        return bytes(self._file.data[position : position + size])

    def size(self) -> int:
        return len(self._file.data)

    def truncate(self, size: int) -> None:
        del self._file.data[size:]
        self._file.synced_bytes = min(self._file.synced_bytes, size)

    def fsync(self) -> None:
        self._fs.check_fault("fsync")
        self._file.synced_bytes = len(self._file.data)

    def close(self) -> None:
        pass


class MemoryFilesystem:
    """Files in memory, with fsync tracking and fault injection.

    ``fail_next_write`` / ``fail_next_fsync`` make the next such call raise the given
    ``OSError``; ``capacity_bytes`` makes appends past it fail with ENOSPC.
    """

    def __init__(self, *, capacity_bytes: int | None = None) -> None:
        self._files: dict[str, _MemoryFile] = {}
        self._dirs: set[str] = {"", "/"}
        self.capacity_bytes = capacity_bytes
        self.fail_next_write: OSError | None = None
        self.fail_next_fsync: OSError | None = None

    def check_fault(self, kind: str) -> None:
        attribute = f"fail_next_{kind}"
        error: OSError | None = getattr(self, attribute)
        if error is not None:
            setattr(self, attribute, None)
            raise error

    def used_bytes(self) -> int:
        return sum(len(file.data) for file in self._files.values())

    @staticmethod
    def _norm(path: str) -> str:
        return os.path.normpath(path)

    def open(self, path: str) -> FileHandle:
        path = self._norm(path)
        if os.path.dirname(path) not in self._dirs:
            raise FileNotFoundError(2, "No such directory", path)
        file = self._files.get(path)
        if file is None:
            file = self._files[path] = _MemoryFile()
        return _MemoryHandle(self, file)

    def exists(self, path: str) -> bool:
        path = self._norm(path)
        return path in self._files or path in self._dirs

    def listdir(self, path: str) -> list[str]:
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(2, "No such directory", path)
        names = {
            os.path.basename(entry)
            for entry in (*self._files, *self._dirs)
            if entry != path and os.path.dirname(entry) == path
        }
        return sorted(names)

    def makedirs(self, path: str) -> None:
        path = self._norm(path)
        while path not in self._dirs:
            self._dirs.add(path)
            path = os.path.dirname(path)

    def remove(self, path: str) -> None:
        path = self._norm(path)
        if self._files.pop(path, None) is None:
            raise FileNotFoundError(2, "No such file", path)

    def rename(self, source: str, target: str) -> None:
        source, target = self._norm(source), self._norm(target)
        if source in self._dirs:
            for entry in [d for d in self._dirs if d == source or d.startswith(source + "/")]:
                self._dirs.discard(entry)
                self._dirs.add(target + entry[len(source) :])
            for entry in [f for f in self._files if f.startswith(source + "/")]:
                self._files[target + entry[len(source) :]] = self._files.pop(entry)
            return
        file = self._files.pop(source)
        file.entry_durable = True  # renames are treated as atomic and durable
        self._files[target] = file

    def rmtree(self, path: str) -> None:
        path = self._norm(path)
        for entry in [f for f in self._files if f.startswith(path + "/")]:
            del self._files[entry]
        self._dirs = {d for d in self._dirs if d != path and not d.startswith(path + "/")}

    def fsync_dir(self, path: str) -> None:
        path = self._norm(path)
        for name, file in self._files.items():
            if os.path.dirname(name) == path:
                file.entry_durable = True

    def read_file(self, path: str) -> bytes:
        path = self._norm(path)
        if path not in self._files:
            raise FileNotFoundError(2, "No such file", path)
        return bytes(self._files[path].data)

    def write_file_atomic(self, path: str, data: bytes) -> None:
        path = self._norm(path)
        file = _MemoryFile()
        file.data = bytearray(data)
        file.synced_bytes = len(data)
        file.entry_durable = True
        self._files[path] = file

    def crash(self, rng: random.Random | None = None) -> MemoryFilesystem:
        """The filesystem as a power cut would leave it.

        Files never made durable by ``fsync_dir`` vanish; each file keeps its fsynced
        content, plus, when ``rng`` is given, a random prefix of what was written after
        the last fsync (a torn tail), sometimes with garbage appended.
        """
        survivor = MemoryFilesystem(capacity_bytes=self.capacity_bytes)
        survivor._dirs = set(self._dirs)
        for path, file in self._files.items():
            if not file.entry_durable:
                continue
            content = bytearray(file.data[: file.synced_bytes])
            unsynced = bytes(file.data[file.synced_bytes :])
            if rng is not None and unsynced:
                content += unsynced[: rng.randrange(len(unsynced) + 1)]
                if rng.random() < 0.25:
                    content += rng.randbytes(rng.randrange(1, 64))
            copy = _MemoryFile()
            copy.data = content
            copy.synced_bytes = len(content)
            copy.entry_durable = True
            survivor._files[path] = copy
        return survivor
