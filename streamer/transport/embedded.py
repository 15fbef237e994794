"""The embedded transport: the log lives in this process, and is reachable on loopback.

::

    transport = EmbeddedTransport("./streamer-data", app_id="orders")
    await transport.start()       # opens (recovers) the log; serves it on 127.0.0.1:<free port>
    await transport.ensure_topics([TopicSpec("orders", partitions=4)])
    await transport.send("orders", 0, b"key", b"value", (), timestamp_ms)
    await transport.flush()       # everything sent is durable
    await transport.close()

``start`` wraps the log in a :class:`~streamer.log.broker.Broker` (which owns the group
coordinator) and, unless ``listen=None``, serves it with the Kafka-protocol server, so that
``streamer consume``, kcat and workers in other processes reach the running job (DESIGN
§3.7). A durable log's folder then holds two files of ours:

    worker.lock   held with flock(LOCK_EX) while a worker owns the folder: a second process
                  gets :class:`LogInUseError`, carrying the address below, and connects there
                  with the kafka transport instead of opening the same files
    worker.json   {"host", "port", "pid", "app_id"}: where the owner serves the protocol

Producing costs well under a microsecond a record: each partition has one open record batch
(aiokafka's C builder); a record is appended to it, and a full batch (``BATCH_BYTES_MAX``, or
the topic's ``max.message.bytes`` if smaller) is appended to the log on the event loop, in
order, as the server's produce path does. Open batches are also written ``linger_ms`` after
they opened, so readers see records soon at low rates. :meth:`EmbeddedTransport.flush` writes
every open batch and waits until every partition written since the last flush is durable.

A write the log refuses (a record over ``max.message.bytes``, a failed disk) drops that batch;
the error is raised by the send that triggered the write, by every later send that starts a
batch, and by the next :meth:`~EmbeddedTransport.flush`, which clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from streamer.log import (
    InvalidTopicError,
    Log,
    LogError,
    PartitionLog,
    TopicExistsError,
    UnknownTopicOrPartitionError,
)
from streamer.log.broker import INTERNAL_TOPICS, Broker
from streamer.log.server import KafkaServer

from ..events import Headers
from .base import RebalanceListener, TopicSpec, Transport
from .embedded_consumer import EmbeddedConsumer, EmbeddedConsumerStatistics
from .embedded_reader import EmbeddedReader
from .kafka_client import TransportError

__all__ = [
    "ADDRESS_FILE",
    "BATCH_BYTES_MAX",
    "LOCK_FILE",
    "EmbeddedTransport",
    "EmbeddedTransportStatistics",
    "LogInUseError",
    "lock_log_folder",
    "read_worker_address",
    "write_worker_address",
]

logger = logging.getLogger("streamer.transport.embedded")

DEFAULT_LISTEN = "127.0.0.1:0"
LOCK_FILE = "worker.lock"
ADDRESS_FILE = "worker.json"
# One open batch per partition holds at most this much (Kafka's default max.message.bytes is
# 1 MiB + 12): large enough that the per-batch work (CRC, writev, notify) vanishes per record.
BATCH_BYTES_MAX = 1 << 20
LINGER_MS = 5  # an open batch is written this long after its first record at the latest
# Group timing. Kafka's session timeout; a heartbeat in process is a function call, so it
# runs more often than Kafka's 3 s and a rebalance starts sooner.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 1_000
REBALANCE_TIMEOUT_MS = 60_000  # how long the group waits for members to rejoin

_MAGIC = 2
_NO_COMPRESSION = 0
_NO_PRODUCER = -1
_NO_HEADERS: list[tuple[str, bytes | None]] = []  # never mutated by the builder
_ANY_HOST = ("", "0.0.0.0", "::")


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


@dataclass(frozen=True, slots=True)
class EmbeddedTransportStatistics:
    url: str
    address: tuple[str, int] | None  # where the Kafka protocol is served; None: not listening
    records_written: int  # appended to the log (flushed or not)
    batches_written: int
    bytes_written: int
    open_batches: int  # partitions with records not yet written
    consumers: tuple[EmbeddedConsumerStatistics, ...]


class _OpenBatch:
    """The records of one partition not yet written to its log."""

    __slots__ = ("builder", "count", "partition")

    def __init__(self, partition: PartitionLog, batch_bytes_max: int) -> None:
        self.partition = partition
        self.builder = DefaultRecordBatchBuilder(
            _MAGIC, _NO_COMPRESSION, 0, _NO_PRODUCER, _NO_PRODUCER, _NO_PRODUCER, batch_bytes_max
        )
        self.count = 0  # records in it: the next record's offset delta


class EmbeddedTransport(Transport):
    """The log of ``url`` (``memory://``, a path, ``file://PATH``) in this process."""

    def __init__(
        self,
        url: str,
        *,
        app_id: str,
        listen: str | None = DEFAULT_LISTEN,
        linger_ms: int = LINGER_MS,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
    ) -> None:
        if url.startswith("kafka://"):
            raise ValueError(f"{url!r} names a remote broker: use the kafka transport")
        if linger_ms < 0:
            raise ValueError("linger_ms must be ≥ 0")
        self.url = url
        self.app_id = app_id
        self._root = None if url == "memory://" else url.removeprefix("file://")
        self._listen = None if listen is None else _parse_address(listen)
        self._linger_s = linger_ms / 1000
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self.address: tuple[str, int] | None = None  # bound by start() when listening
        self._lock_fd: int | None = None
        self._broker: Broker | None = None
        self._server: KafkaServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._unflushed: dict[PartitionLog, int] = {}  # written since the last flush → end
        self._failure: LogError | None = None  # a failed write, until flush reports it
        self._linger: asyncio.TimerHandle | None = None
        self._partition_counts: dict[str, int] = {}
        self._consumers: weakref.WeakSet[EmbeddedConsumer] = weakref.WeakSet()
        self._records_written = 0
        self._batches_written = 0
        self._bytes_written = 0
        self._closed = False

    @property
    def broker(self) -> Broker:
        assert self._broker is not None, "start() first"
        return self._broker

    @property
    def log(self) -> Log:
        return self.broker.log

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the folder, open the log, serve it; raises :class:`LogInUseError`."""
        assert self._broker is None and not self._closed, "start() once"
        self._loop = asyncio.get_running_loop()
        if self._root is not None:
            self._lock_fd = await asyncio.to_thread(lock_log_folder, self._root)
        try:
            broker = await asyncio.to_thread(_open_broker, self.url)
        except BaseException:
            self._unlock()
            raise
        try:
            await self._serve(broker)
        except BaseException:
            with contextlib.suppress(Exception):
                await (self._server.close() if self._server is not None else broker.close())
            self._server = None
            self._unlock()
            raise
        self._broker = broker

    async def _serve(self, broker: Broker) -> None:
        if self._listen is None:
            await broker.start()
            return
        server = KafkaServer(broker, *self._listen)
        host, port = await server.start()  # on failure start() closes the broker
        self._server = server
        self.address = ("127.0.0.1" if host in _ANY_HOST else host, port)
        if self._root is not None:
            await asyncio.to_thread(write_worker_address, self._root, self.address, self.app_id)

    async def close(self) -> None:
        """Leave every group, flush, close the server and the log, release the folder.

        Raises the flush's error, if any, once everything is released.
        """
        if self._broker is None or self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        failure: LogError | None = None
        try:
            await self.flush()
        except LogError as error:
            failure = error
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        await (self._server.close() if self._server is not None else self._broker.close())
        if self._root is not None and self.address is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self._root, ADDRESS_FILE))
        self._unlock()
        if failure is not None:
            raise failure

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- topics ---------------------------------------------------------------------------

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> dict[str, int]:
        log, default_partitions = self.log, self.broker.config.default_partitions

        def ensure() -> dict[str, int]:  # creating writes and fsyncs files: off the loop
            counts: dict[str, int] = {}
            for spec in specs:
                if not log.has_topic(spec.name):
                    with contextlib.suppress(TopicExistsError):  # a client of ours was first
                        log.create_topic(
                            spec.name, spec.partitions or default_partitions, spec.config
                        )
                count = log.topic(spec.name).partitions
                if spec.partitions is not None and spec.partitions != count:
                    logger.warning("topic %s exists with %d partitions, not %d; keeping %d",
                                   spec.name, count, spec.partitions, count)  # fmt: skip
                counts[spec.name] = count
            return counts

        counts = await asyncio.to_thread(ensure)
        self._partition_counts.update(counts)
        return counts

    def partition_count(self, topic: str) -> int:
        """Raises ``KeyError`` for a topic the log does not have."""
        count = self._partition_counts.get(topic)
        if count is None:
            try:
                count = self._partition_counts[topic] = self.log.topic(topic).partitions
            except UnknownTopicOrPartitionError:
                raise KeyError(topic) from None
        return count

    # -- producing ------------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        # The hot path: a dict lookup and the C builder's append, nothing else per record.
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open_batch(topic, partition)
        record_headers = list(headers) if headers else _NO_HEADERS
        if batch.builder.append(batch.count, timestamp_ms, key, value, record_headers) is None:
            self._write(batch)  # full: raises if the log refuses it; this record is not queued
            batch = self._open_batch(topic, partition)
            batch.builder.append(0, timestamp_ms, key, value, record_headers)  # the first fits
            batch.count = 1
            await asyncio.sleep(0)  # a batch's worth of sends: let heartbeats and clients run
            return
        batch.count += 1

    def _open_batch(self, topic: str, partition: int) -> _OpenBatch:
        assert self._broker is not None and not self._closed, "send between start and close"
        if self._failure is not None:
            raise self._failure
        if topic in INTERNAL_TOPICS:
            raise InvalidTopicError(f"{topic} is an internal topic: only the broker writes it")
        log_partition = self._broker.log.partition(topic, partition)
        batch_bytes_max = min(BATCH_BYTES_MAX, log_partition.config.max_message_bytes)
        batch = self._open[(topic, partition)] = _OpenBatch(log_partition, batch_bytes_max)
        if self._linger is None:
            assert self._loop is not None
            self._linger = self._loop.call_later(self._linger_s, self._on_linger)
        return batch

    def _on_linger(self) -> None:
        self._linger = None
        self._write_all()

    def _write_all(self) -> None:
        for batch in list(self._open.values()):
            with contextlib.suppress(LogError):  # kept in self._failure
                self._write(batch)

    def _write(self, batch: _OpenBatch) -> None:
        """Append ``batch`` to its partition, on the loop, in order (as Produce does)."""
        partition = batch.partition
        del self._open[(partition.topic, partition.partition)]
        data = batch.builder.build()
        try:
            appended = partition.append(data, wait_durable=False)
        except LogError as error:
            logger.error("writing %d records to %s failed: %s", batch.count, partition.name, error)
            if self._failure is None:
                self._failure = error
            raise
        self._unflushed[partition] = appended.last_offset + 1
        self.broker.notify_append(partition.topic, partition.partition)
        self._records_written += batch.count
        self._batches_written += 1
        self._bytes_written += len(data)

    async def flush(self) -> None:
        self._write_all()
        unflushed, self._unflushed = self._unflushed, {}
        waits = [
            self.broker.wait_durable(partition, up_to)
            for partition, up_to in unflushed.items()
            if partition.durable_offset < up_to and partition.config.flush_every_append
        ]
        if waits:  # concurrent fsyncs in worker threads, one per partition
            for outcome in await asyncio.gather(*waits, return_exceptions=True):
                if isinstance(outcome, LogError):
                    self._failure = self._failure or outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    # -- consuming ------------------------------------------------------------------------

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        auto_offset_reset: str = "earliest",
        standby_replicas: int = 0,
    ) -> EmbeddedConsumer:
        consumer = EmbeddedConsumer(
            self.broker, group_id, topics, listener,
            auto_offset_reset=auto_offset_reset,
            standby_replicas=standby_replicas,
            client_id=self.app_id,
            session_timeout_ms=self._session_timeout_ms,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )  # fmt: skip
        self._consumers.add(consumer)
        return consumer

    def reader(self) -> EmbeddedReader:
        return EmbeddedReader(self.broker)

    def statistics(self) -> EmbeddedTransportStatistics:
        return EmbeddedTransportStatistics(
            self.url, self.address, self._records_written, self._batches_written,
            self._bytes_written, len(self._open),
            tuple(consumer.statistics() for consumer in self._consumers),
        )  # fmt: skip


# -- the folder: lock and address ----------------------------------------------------------


def _open_broker(url: str) -> Broker:
    log = Log.open_url(url)
    try:
        return Broker(log)  # reads or creates cluster.json
    except BaseException:
        log.close()
        raise


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


def _parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen={text!r}: expected HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "127.0.0.1", int(port)
