"""An embedded log's folder: who owns it, and where the owner serves it.

A durable log's folder holds two files of ours (see :mod:`streamer.transport.embedded`):

    worker.lock   held with flock(LOCK_EX) while a process owns the folder: a second one
                  gets :class:`LogInUseError`, carrying the address below, and connects there
                  with the kafka transport instead of opening the same files
    worker.json   {"host", "port", "pid", "app_id"}: where the owner serves the protocol
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from typing import Any

from .kafka_client import TransportError

__all__ = [
    "ADDRESS_FILE",
    "LOCK_FILE",
    "LogInUseError",
    "lock_log_folder",
    "read_worker_address",
    "write_worker_address",
]

LOCK_FILE = "worker.lock"
ADDRESS_FILE = "worker.json"


class LogInUseError(TransportError):
    """Another process owns this log folder; connect to it over the Kafka protocol.

    ``address`` is where that process serves the protocol, or None when it does not listen
    (``listen=None``) or has not written its address yet.
    """

    def __init__(self, path: str, address: tuple[str, int] | None, pid: int | None) -> None:
        owner = f"process {pid}" if pid is not None else "another process"
        if address is None:
            advice = "it does not serve the Kafka protocol (yet): stop it first, or retry"
        else:
            host, port = address
            advice = f"connect to it with --broker kafka://{host}:{port}, or stop it first"
        super().__init__(f"the log in {path} is in use by {owner}; {advice}")
        self.path = path
        self.address = address
        self.pid = pid

    @property
    def url(self) -> str | None:
        """The broker URL to reach the owner with, as ``open_transport`` takes it."""
        return None if self.address is None else f"kafka://{self.address[0]}:{self.address[1]}"


def lock_log_folder(root: str) -> int:
    """Take a log folder's lock, or raise :class:`LogInUseError` naming its owner.

    Whoever opens the log's files should hold it (a worker, ``streamer broker``): the
    returned descriptor holds it until ``os.close``. A ``worker.json`` left by an owner
    that crashed is removed, so the file names the current owner or nobody.
    """
    os.makedirs(root, exist_ok=True)
    fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        found = read_worker_address(root)
        raise LogInUseError(root, *(found or (None, None))) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(root, ADDRESS_FILE))
    return fd


def write_worker_address(root: str, address: tuple[str, int], app_id: str) -> None:
    record = {"host": address[0], "port": address[1], "pid": os.getpid(), "app_id": app_id}
    path = os.path.join(root, ADDRESS_FILE)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(record, file)
    os.replace(temporary, path)  # readers see the old file or the new one, never half


def read_worker_address(root: str) -> tuple[tuple[str, int] | None, int | None] | None:
    """``(address, pid)`` from a folder's ``worker.json``; None if absent or unreadable.

    Only meaningful while the folder's lock is held: a crashed worker leaves its file.
    """
    try:
        with open(os.path.join(root, ADDRESS_FILE), encoding="utf-8") as file:
            record: Any = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    host, port, pid = record.get("host"), record.get("port"), record.get("pid")
    address = (host, port) if isinstance(host, str) and type(port) is int else None
    return address, pid if type(pid) is int else None
