"""The transaction coordinator's durable state: the compacted ``__transaction_state`` topic.

Every state change of a transactional id appends one record holding its whole state, so
the last record of each id is all a restart needs and compaction may drop the others. The
key is Kafka's (``TransactionLogKey`` v0): int16 version 0 + string transactional id. The
value is streamer's own layout, numbered 100 so that no reader of Kafka's value versions
(0 and 1) mistakes it for theirs; all integers big-endian, strings int16-length UTF-8::

    int16  version (100)
    int64  producer id                 int16  producer epoch
    int64  last producer id (-1)       int16  last producer epoch (-1)
    int32  transaction timeout ms      int8   state (Kafka's numbers: 0 Empty ... 5 CompleteAbort)
    int64  start ms (-1)               int64  update ms
    int32  partitions, each: string topic, int32 partition
    int32  groups, each: string group id, int32 offsets, each:
               string topic, int32 partition, int64 offset, int32 leader epoch, string metadata

A group listed with no offsets was added (AddOffsetsToTxn) but has nothing committed yet;
the offsets are the ones TxnOffsetCommit sent, applied to the group if the transaction
commits, so a restart in PrepareCommit can still apply them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..clock import Clock
from ..groups.offsets import fits_string, partition_for
from ..partition import PartitionLog
from ..replay import replay_records
from ..storage import Log
from .state import PendingOffset, TopicPartition, Transaction, TransactionState

__all__ = ["TRANSACTION_STATE_TOPIC", "TransactionLog", "decode", "encode_key", "encode_value"]

logger = logging.getLogger("streamer.log.transactions")

TRANSACTION_STATE_TOPIC = "__transaction_state"
_KEY_VERSION = 0
_VALUE_VERSION = 100
# Kafka's transaction.state.log.segment.bytes: small enough for compaction to clean soon.
_SEGMENT_BYTES = 100 * 1024 * 1024
_BUILDER_BATCH_BYTES_MAX = 1 << 30  # the topic's max.message.bytes is the real limit
_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_HEAD = struct.Struct(">hqhqhibqq")  # version ... update ms


# -- the record format --------------------------------------------------------------------


def _string(text: str) -> bytes:
    data = text.encode()
    assert fits_string(text), "the coordinator checks ids, topics and metadata first"
    return _INT16.pack(len(data)) + data


def encode_key(transactional_id: str) -> bytes:
    return _INT16.pack(_KEY_VERSION) + _string(transactional_id)


def encode_value(txn: Transaction) -> bytes:
    parts = [
        _HEAD.pack(
            _VALUE_VERSION, txn.producer_id, txn.producer_epoch, txn.last_producer_id,
            txn.last_producer_epoch, txn.timeout_ms, txn.state, txn.start_ms, txn.update_ms,
        ),  # fmt: skip
        _INT32.pack(len(txn.partitions)),
    ]
    for topic, partition in sorted(txn.partitions):
        parts += (_string(topic), _INT32.pack(partition))
    parts.append(_INT32.pack(len(txn.offsets)))
    for group_id, pending in sorted(txn.offsets.items()):
        parts += (_string(group_id), _INT32.pack(len(pending)))
        for (topic, partition), offset in sorted(pending.items()):
            parts += (
                _string(topic), _INT32.pack(partition), _INT64.pack(offset.offset),
                _INT32.pack(offset.leader_epoch), _string(offset.metadata),
            )  # fmt: skip
    return b"".join(parts)


class _Cursor:
    """Reads a record's fields in order; every read is bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def unpack(self, layout: struct.Struct) -> Any:
        if self.position + layout.size > len(self.data):
            raise ValueError(f"record ends at byte {len(self.data)}, inside a field")
        values = layout.unpack_from(self.data, self.position)
        self.position += layout.size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack(_INT16)
        end = self.position + length
        if length < 0 or end > len(self.data):
            raise ValueError(f"string of {length} bytes at {self.position} runs past the record")
        text = self.data[self.position : end].decode()
        self.position = end
        return text

    def count(self) -> int:
        count = self.unpack(_INT32)
        if not 0 <= count <= len(self.data) - self.position:  # each item takes a byte or more
            raise ValueError(f"impossible count {count}")
        return int(count)


def decode(key: bytes, value: bytes) -> Transaction:
    """The transaction a record holds; raises ValueError (or UnicodeDecodeError) if damaged."""
    cursor = _Cursor(key)
    if cursor.unpack(_INT16) != _KEY_VERSION:
        raise ValueError("unknown key version")
    transactional_id = cursor.string()
    cursor = _Cursor(value)
    head = cursor.unpack(_HEAD)
    if head[0] != _VALUE_VERSION:
        raise ValueError(f"unknown value version {head[0]}")
    partitions = frozenset(_partition(cursor) for _ in range(cursor.count()))
    offsets = {}
    for _ in range(cursor.count()):
        group_id = cursor.string()
        offsets[group_id] = dict(_offset(cursor) for _ in range(cursor.count()))
    if cursor.position != len(value):
        raise ValueError("bytes left over after a transaction's state")
    return Transaction(
        transactional_id,
        producer_id=head[1],
        producer_epoch=head[2],
        last_producer_id=head[3],
        last_producer_epoch=head[4],
        timeout_ms=head[5],
        state=TransactionState(head[6]),
        start_ms=head[7],
        update_ms=head[8],
        partitions=partitions,
        offsets=offsets,
    )


def _partition(cursor: _Cursor) -> TopicPartition:
    return cursor.string(), cursor.unpack(_INT32)


def _offset(cursor: _Cursor) -> tuple[TopicPartition, PendingOffset]:
    topic_partition = _partition(cursor)
    offset, leader_epoch = cursor.unpack(_INT64), cursor.unpack(_INT32)
    return topic_partition, PendingOffset(offset, leader_epoch, cursor.string())


def _encode_batch(txn: Transaction, timestamp_ms: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=_BUILDER_BATCH_BYTES_MAX,
    )  # fmt: skip
    key = encode_key(txn.transactional_id)
    builder.append(0, timestamp=timestamp_ms, key=key, value=encode_value(txn), headers=[])
    return bytes(builder.build())


# -- the topic ----------------------------------------------------------------------------


class TransactionLog:
    """Every transactional id's last state, read from and written to the state topic."""

    def __init__(self, log: Log, clock: Clock, *, topic: str = TRANSACTION_STATE_TOPIC) -> None:
        self.log = log
        self.clock = clock
        self.topic = topic
        self.partitions = 1  # an existing topic's count wins, see load()
        self.skipped_records = 0  # records the replay could not decode

    def load(self) -> dict[str, Transaction]:
        """Create the topic if needed, else replay it. Synchronous: run it in a thread."""
        if not self.log.has_topic(self.topic):
            config = {"cleanup.policy": "compact", "segment.bytes": _SEGMENT_BYTES}
            self.log.create_topic(self.topic, self.partitions, config)
        info = self.log.topic(self.topic)
        self.partitions = info.partitions
        if not info.config.compact:
            logger.warning(
                "%s has cleanup.policy=%s: retention may delete the state of open "
                "transactions; set it to compact", self.topic, info.config.cleanup_policy,
            )
        found: dict[str, Transaction] = {}
        for partition in range(self.partitions):
            self._replay(self.log.partition(self.topic, partition), found)
        return found

    def _replay(self, partition: PartitionLog, found: dict[str, Transaction]) -> None:
        for record in replay_records(partition, self._skipped):
            self._replay_record(partition, record, found)

    def _skipped(self) -> None:
        self.skipped_records += 1

    def _replay_record(
        self, partition: PartitionLog, record: Any, found: dict[str, Transaction]
    ) -> None:
        if record.key is None or record.value is None:
            return  # no tombstones are written; one from elsewhere holds nothing to load
        try:
            txn = decode(record.key, record.value)
        except (ValueError, struct.error, UnicodeDecodeError) as error:
            self.skipped_records += 1
            logger.warning(
                "%s offset %d is not a transaction's state, skipped: %s",
                partition.name, record.offset, error,
            )
            return
        found[txn.transactional_id] = txn

    async def write(self, txn: Transaction, *, durable: bool = True) -> None:
        """Append ``txn`` as its id's latest state; with ``durable``, return once fsynced
        (under the topic's ``flush.ms``), else it is made durable by the next fsync.

        The append runs on the event loop, as Produce's do (a write to the page cache), so
        each id's records are in the order of its changes; the fsync runs in a thread.
        Raises :class:`~streamer.log.errors.LogError` if the log refused or failed it.
        """
        partition = self.log.partition(
            self.topic, partition_for(txn.transactional_id, self.partitions)
        )
        batch = _encode_batch(txn, self.clock.time_ms())
        appended = partition.append(batch, wait_durable=False)
        if durable and partition.config.flush_every_append:
            await asyncio.to_thread(partition.flush, appended.last_offset + 1)
