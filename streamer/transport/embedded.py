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

Transactions (:meth:`EmbeddedTransport.init_transactions`, exactly-once workers) go through
:mod:`.embedded_transactions`: each partition joins the transaction before its first batch
is written, and batches carry the producer id, epoch, sequence numbers and the transactional
bit. :meth:`~EmbeddedTransport.seal_transaction` takes the open batches out for the commit;
sends go on meanwhile into batches of the next transaction, written (their partitions
joined) once the commit is over. A refused write or a failed join does not raise from
``send``: it dooms the transaction, whose later records are dropped and whose commit raises
``TransactionAbortedError`` (or ``TransactionFencedError``); the caller aborts and redoes
the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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
from streamer.log.errors import ProducerFencedError
from streamer.log.server import KafkaServer

from ..events import Headers, TopicPartition
from .base import RebalanceListener, TopicSpec, Transport, TransportConsumer
from .embedded_consumer import EmbeddedConsumer, EmbeddedConsumerStatistics
from .embedded_folder import (
    ADDRESS_FILE,
    LOCK_FILE,
    LogInUseError,
    lock_log_folder,
    read_worker_address,
    write_worker_address,
)
from .embedded_reader import EmbeddedReader
from .embedded_transactions import EmbeddedTransactions
from .kafka_client import (
    TransactionAbortedError,
    TransactionError,
    TransactionFencedError,
)

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

    __slots__ = ("base_sequence", "builder", "count", "partition")

    def __init__(
        self,
        partition: PartitionLog,
        batch_bytes_max: int,
        producer: tuple[int, int, int] | None = None,  # transactional: id, epoch, sequence
    ) -> None:
        self.partition = partition
        if producer is None:
            self.base_sequence = _NO_PRODUCER
            self.builder = DefaultRecordBatchBuilder(
                _MAGIC, _NO_COMPRESSION, 0, _NO_PRODUCER, _NO_PRODUCER, _NO_PRODUCER,
                batch_bytes_max,
            )  # fmt: skip
        else:
            producer_id, epoch, self.base_sequence = producer
            self.builder = DefaultRecordBatchBuilder(
                _MAGIC, _NO_COMPRESSION, 1, producer_id, epoch, self.base_sequence,
                batch_bytes_max,
            )  # fmt: skip
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
        self._transactions: EmbeddedTransactions | None = None  # init_transactions()
        # A join that failed: the transaction is doomed, its records dropped until the abort.
        self._transaction_failure: TransactionError | None = None
        self._sealed: list[_OpenBatch] = []  # the committing transaction's last batches
        # Batches of the next transaction that filled while one commits: written after it.
        self._held: list[_OpenBatch] = []
        self._written: set[tuple[str, int]] = set()  # partitions the transaction wrote
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
        Transactional: abort the open transaction instead of flushing (what was to be kept
        was committed).

        Raises the flush's error, if any, once everything is released.
        """
        if self._broker is None or self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers):
            await consumer.close()
        failure: LogError | None = None
        try:
            if self._transactions is None:
                await self.flush()
            else:
                with contextlib.suppress(TransactionError):  # fenced: nothing of ours is open
                    await self.abort_transaction()
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
            if self._transactions is None:
                batch = self._open_batch(topic, partition)
            else:
                found = await self._open_in_transaction(topic, partition)
                if found is None:
                    return  # the transaction is doomed: it aborts, this record with it
                batch = found
        record_headers = list(headers) if headers else _NO_HEADERS
        if batch.builder.append(batch.count, timestamp_ms, key, value, record_headers) is None:
            if not self._may_write():
                self._hold(batch)  # the next transaction's: written once this one committed
            else:
                try:
                    self._write(batch)  # full: raises if the log refuses it; the record is lost
                except LogError:
                    if self._transactions is None:
                        raise
                    return  # kept in self._failure: the commit raises it, the abort drops it
            batch = self._open_batch(topic, partition)
            batch.builder.append(0, timestamp_ms, key, value, record_headers)  # the first fits
            batch.count = 1
            await asyncio.sleep(0)  # a batch's worth of sends: let heartbeats and clients run
            return
        batch.count += 1

    def _open_batch(self, topic: str, partition: int) -> _OpenBatch:
        assert self._broker is not None and not self._closed, "send between start and close"
        if self._failure is not None and self._transactions is None:
            raise self._failure
        if topic in INTERNAL_TOPICS:
            raise InvalidTopicError(f"{topic} is an internal topic: only the broker writes it")
        log_partition = self._broker.log.partition(topic, partition)
        batch_bytes_max = min(BATCH_BYTES_MAX, log_partition.config.max_message_bytes)
        transactions = self._transactions
        producer = None if transactions is None else transactions.batch_header(topic, partition)
        batch = self._open[(topic, partition)] = _OpenBatch(
            log_partition, batch_bytes_max, producer)
        self._arm_linger()
        return batch

    def _arm_linger(self) -> None:
        if self._linger is None:
            assert self._loop is not None
            self._linger = self._loop.call_later(self._linger_s, self._on_linger)

    async def _open_in_transaction(self, topic: str, partition: int) -> _OpenBatch | None:
        """The partition's open batch, the partition joining the transaction first; None
        once the transaction is doomed (a failed join or write)."""
        transactions = self._transactions
        assert transactions is not None
        if self._transaction_failure is not None or self._failure is not None:
            return None
        # While a transaction commits, the next one's batches open unjoined: the commit
        # joins their partitions once it is done, before any of them is written.
        if not transactions.committing and not transactions.joined(topic, partition):
            if topic in INTERNAL_TOPICS:
                raise InvalidTopicError(f"{topic} is an internal topic: only the broker writes it")
            try:
                await transactions.join([(topic, partition)])
            except TransactionError as error:
                self._transaction_failure = self._transaction_failure or error
                return None
        # Another send may have opened it while this one waited for the join.
        return self._open.get((topic, partition)) or self._open_batch(topic, partition)

    def _on_linger(self) -> None:
        self._linger = None
        if self._may_write():
            self._write_all()

    def _may_write(self) -> bool:
        """Open batches may go to the log: not while a transaction commits (they are the
        next one's, their partitions not joined yet) nor once a join failed."""
        transactions = self._transactions
        return transactions is None or not (
            transactions.committing or self._transaction_failure is not None)

    def _write_all(self) -> None:
        for batch in list(self._open.values()):
            with contextlib.suppress(LogError):  # kept in self._failure
                self._write(batch)

    def _hold(self, batch: _OpenBatch) -> None:
        """Close ``batch`` (its sequence numbers taken) without writing it yet."""
        partition = batch.partition
        del self._open[(partition.topic, partition.partition)]
        self._close(batch)
        self._held.append(batch)

    def _close(self, batch: _OpenBatch) -> None:
        """No record joins ``batch`` any more: the next batch's sequence follows it."""
        if batch.base_sequence >= 0:
            assert self._transactions is not None
            self._transactions.closed(batch.partition.topic, batch.partition.partition,
                                      batch.base_sequence, batch.count)

    def _write(self, batch: _OpenBatch, *, closed: bool = False) -> None:
        """Append ``batch`` to its partition, on the loop, in order (as Produce does);
        ``closed``: taken out of the open batches already."""
        partition = batch.partition
        if not closed:
            del self._open[(partition.topic, partition.partition)]
            self._close(batch)
        data = batch.builder.build()
        try:
            appended = partition.append(data, wait_durable=False)
        except LogError as error:
            logger.error("writing %d records to %s failed: %s", batch.count, partition.name, error)
            if self._failure is None:
                self._failure = error
            raise
        self._unflushed[partition] = appended.last_offset + 1
        if self._transactions is not None:
            self._written.add((partition.topic, partition.partition))
        self.broker.notify_append(partition.topic, partition.partition)
        self._records_written += batch.count
        self._batches_written += 1
        self._bytes_written += len(data)

    async def flush(self) -> None:
        self._write_all()
        await self._wait_durable()

    async def _wait_durable(self) -> None:
        """Until every partition written since the last call is durable; raises a failed
        write's or fsync's error (once)."""
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

    # -- transactions -----------------------------------------------------------------------

    async def init_transactions(self, transactional_id: str) -> None:
        assert self._transactions is None, "init_transactions() once"
        assert not self._open and not self._unflushed, "init_transactions() before any send"
        transactions = EmbeddedTransactions(self.broker, transactional_id)
        await transactions.init()
        self._transactions = transactions

    def seal_transaction(self) -> None:
        transactions = self._transactions
        assert transactions is not None, "init_transactions() first"
        assert not transactions.committing, "one commit at a time"
        self._sealed = list(self._open.values())
        self._open.clear()
        for batch in self._sealed:
            self._close(batch)
        transactions.committing = True

    async def commit_transaction(
        self, offsets: Mapping[TopicPartition, int], consumer: TransportConsumer | None
    ) -> None:
        transactions = self._transactions
        assert transactions is not None and transactions.committing, "seal_transaction() first"
        if self._transaction_failure is not None:
            raise self._transaction_failure
        sealed, self._sealed = self._sealed, []
        try:
            for batch in sealed:
                self._write(batch, closed=True)
            await self._wait_durable()  # every batch durable before the markers
        except ProducerFencedError as error:
            raise TransactionFencedError(transactions.transactional_id, str(error)) from error
        except LogError as error:
            raise TransactionAbortedError(
                transactions.transactional_id, f"a write failed: {error}") from error
        group = None
        if offsets:
            assert isinstance(consumer, EmbeddedConsumer), "offsets of this transport's consumer"
            member = consumer.statistics().group
            group = (member.group_id, member.generation_id, member.member_id)
        await transactions.commit(offsets, group)
        written, self._written = self._written, set()
        await self._begin_next(transactions, written)

    async def _begin_next(
        self, transactions: EmbeddedTransactions, written: set[tuple[str, int]]
    ) -> None:
        """The next transaction: the partitions sent to while the last one committed, and
        those it wrote to (likely written again), join it; then the batches that filled
        meanwhile are written."""
        likely = written
        while True:
            waiting = {(b.partition.topic, b.partition.partition)
                       for b in (*self._held, *self._open.values())}
            unjoined = [where for where in waiting | likely if not transactions.joined(*where)]
            if not unjoined:
                break
            likely = set()
            try:
                await transactions.join(unjoined)
            except TransactionError as error:  # the next commit raises it
                self._transaction_failure = self._transaction_failure or error
                transactions.committing = False
                return
        transactions.committing = False
        held, self._held = self._held, []
        for batch in held:
            with contextlib.suppress(LogError):  # kept in self._failure
                self._write(batch, closed=True)
        if self._open:  # a linger that came during the commit wrote nothing
            self._arm_linger()

    async def abort_transaction(self) -> None:
        transactions = self._transactions
        assert transactions is not None, "init_transactions() first"
        self._open.clear()  # never written: nothing to mark
        self._sealed.clear()
        self._held.clear()
        self._written.clear()
        self._unflushed.clear()
        self._failure = None
        self._transaction_failure = None
        transactions.committing = False
        await transactions.abort()

    # -- consuming ------------------------------------------------------------------------

    def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        auto_offset_reset: str = "earliest",
        standby_replicas: int = 0,
        isolation_level: str | None = None,
        group_instance_id: str | None = None,
    ) -> EmbeddedConsumer:
        """See :meth:`Transport.consumer`. The default isolation level is
        "read_uncommitted"; "read_committed" reads only committed transactions, up to each
        partition's last stable offset. ``group_instance_id`` is not used: the group lives
        in this process and goes with it, so a restart never finds its predecessor there."""
        consumer = EmbeddedConsumer(
            self.broker, group_id, topics, listener,
            auto_offset_reset=auto_offset_reset,
            standby_replicas=standby_replicas,
            isolation_level=isolation_level or "read_uncommitted",
            client_id=self.app_id,
            session_timeout_ms=self._session_timeout_ms,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )  # fmt: skip
        self._consumers.add(consumer)
        return consumer

    def reader(self, *, isolation_level: str | None = None) -> EmbeddedReader:
        """See :meth:`Transport.reader`; ``isolation_level`` as for :meth:`consumer`."""
        return EmbeddedReader(self.broker, isolation_level=isolation_level or "read_uncommitted")

    def statistics(self) -> EmbeddedTransportStatistics:
        return EmbeddedTransportStatistics(
            self.url, self.address, self._records_written, self._batches_written,
            self._bytes_written, len(self._open),
            tuple(consumer.statistics() for consumer in self._consumers),
        )  # fmt: skip


def _open_broker(url: str) -> Broker:
    log = Log.open_url(url)
    try:
        return Broker(log)  # reads or creates cluster.json
    except BaseException:
        log.close()
        raise


def _parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen={text!r}: expected HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "127.0.0.1", int(port)
