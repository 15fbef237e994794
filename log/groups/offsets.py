"""Committed offsets, kept durably in the compacted ``__consumer_offsets`` topic.

Each commit appends one record batch, so a commit is all or nothing. The records use Kafka's
own layout, so a tool that decodes Kafka's ``__consumer_offsets`` decodes ours::

    key    int16 version = 1 | string group | string topic | int32 partition
    value  int16 version = 3 | int64 offset | int32 leader epoch | string metadata
           | int64 commit timestamp (ms)

``string`` is an int16 length and UTF-8; a null value (a tombstone) deletes the key, and
compaction keeps the latest record per key. :meth:`OffsetStore.load` replays the whole topic:
the last write wins, tombstones delete, Kafka's group-metadata keys (version 2) and records
that do not decode are skipped and logged. A group's records go to partition
``abs(javaHashCode(group)) % partitions``, where Kafka puts them.

Writes keep memory and disk in the same order. Appends run one at a time on one thread, so
the log's order is the order of the calls; fsyncs run concurrently (overlapping ones share an
fsync, see :meth:`PartitionLog.flush`); a write reaches the in-memory map, and its caller,
only once it is durable and every earlier write has been applied. So under ``flush.ms=0``
(the log's default) a fetch never sees an offset a crash could take back, and memory always
matches what a replay would rebuild. The topic takes the log's default config apart from
``cleanup.policy=compact`` and Kafka's 100 MiB ``segment.bytes``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..clock import Clock
from ..errors import LogError, LogStorageError, RecordTooLargeError
from ..partition import AppendResult, PartitionLog
from ..protocol.error_codes import ErrorCode
from ..replay import replay_records
from ..storage import Log

__all__ = [
    "OFFSETS_TOPIC",
    "CommittedOffset",
    "OffsetStore",
    "OffsetUpdate",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "fits_string",
    "partition_for",
    "write_error_code",
]

logger = logging.getLogger("streamer.log.groups")

OFFSETS_TOPIC = "__consumer_offsets"
_KEY_VERSION = 1
_GROUP_METADATA_KEY_VERSION = 2
_VALUE_VERSION = 3
_STRING_BYTES_MAX = 32767  # an int16 length, as on the wire
# Kafka's offsets.topic.segment.bytes: segments small enough for compaction to clean soon.
_SEGMENT_BYTES = 100 * 1024 * 1024
_BUILDER_BATCH_BYTES_MAX = 1 << 30  # the topic's max.message.bytes is the real limit
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


class CommittedOffset(NamedTuple):
    offset: int
    leader_epoch: int  # -1 when the client gave none
    metadata: str
    commit_timestamp_ms: int


# (topic, partition, the committed offset, or None to delete it)
OffsetUpdate = tuple[str, int, CommittedOffset | None]

# -- the record format --------------------------------------------------------------------


def fits_string(text: str) -> bool:
    """Whether ``text`` can be stored as a Kafka string (UTF-8, at most 32767 bytes)."""
    try:
        return len(text.encode()) <= _STRING_BYTES_MAX
    except UnicodeEncodeError:  # a lone surrogate: not text a client could have sent
        return False


def _string(text: str) -> bytes:
    data = text.encode()
    assert len(data) <= _STRING_BYTES_MAX, "callers check fits_string first"
    return _INT16.pack(len(data)) + data


def _read_string(data: bytes, position: int) -> tuple[str, int]:
    (length,) = _INT16.unpack_from(data, position)
    start = position + _INT16.size
    if length < 0 or start + length > len(data):
        raise ValueError(f"string of {length} bytes at {position} runs past the record")
    return data[start : start + length].decode(), start + length


def encode_key(group_id: str, topic: str, partition: int) -> bytes:
    return b"".join(
        (_INT16.pack(_KEY_VERSION), _string(group_id), _string(topic), _INT32.pack(partition))
    )


def encode_value(committed: CommittedOffset) -> bytes:
    return b"".join(
        (
            _INT16.pack(_VALUE_VERSION),
            _INT64.pack(committed.offset),
            _INT32.pack(committed.leader_epoch),
            _string(committed.metadata),
            _INT64.pack(committed.commit_timestamp_ms),
        )
    )


def decode_key(data: bytes) -> tuple[str, str, int] | None:
    """``(group, topic, partition)``, or None for Kafka's group-metadata key (version 2)."""
    (version,) = _INT16.unpack_from(data, 0)
    if version == _GROUP_METADATA_KEY_VERSION:
        return None  # this coordinator keeps no group metadata; Kafka's is ignored
    if version not in (0, 1):
        raise ValueError(f"unknown key version {version}")
    group_id, position = _read_string(data, _INT16.size)
    topic, position = _read_string(data, position)
    (partition,) = _INT32.unpack_from(data, position)
    if position + _INT32.size != len(data):
        raise ValueError("bytes left over after an offset key")
    return group_id, topic, partition


def decode_value(data: bytes) -> CommittedOffset:
    """Value versions 0 to 3 as Kafka wrote them (1 adds an expiry, 3 a leader epoch)."""
    (version,) = _INT16.unpack_from(data, 0)
    if not 0 <= version <= 3:
        raise ValueError(f"unknown offset value version {version}")
    (offset,) = _INT64.unpack_from(data, 2)
    position = 10
    leader_epoch = -1
    if version >= 3:
        (leader_epoch,) = _INT32.unpack_from(data, position)
        position += _INT32.size
    metadata, position = _read_string(data, position)
    (commit_timestamp_ms,) = _INT64.unpack_from(data, position)
    position += _INT64.size * (2 if version == 1 else 1)  # v1's expiry is not used
    if position != len(data):
        raise ValueError(f"offset value of version {version} has {len(data)} bytes")
    return CommittedOffset(offset, leader_epoch, metadata, commit_timestamp_ms)


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's placement: ``Utils.abs(groupId.hashCode()) % partitions``."""
    code = 0
    for (unit,) in struct.iter_unpack(">H", group_id.encode("utf-16-be", "surrogatepass")):
        code = (31 * code + unit) & 0xFFFFFFFF  # Java's String.hashCode over UTF-16 units
    signed = code - (1 << 32) if code >= 1 << 31 else code
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def _encode_batch(group_id: str, updates: Sequence[OffsetUpdate], timestamp_ms: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=_BUILDER_BATCH_BYTES_MAX,
    )
    for delta, (topic, partition, committed) in enumerate(updates):
        value = None if committed is None else encode_value(committed)
        key = encode_key(group_id, topic, partition)
        builder.append(delta, timestamp=timestamp_ms, key=key, value=value, headers=[])
    return bytes(builder.build())


def write_error_code(error: LogError) -> ErrorCode:
    """The code a commit (or a group deletion) answers when the log refused its write.

    Kafka's mapping: a storage failure sends the client to find the coordinator again,
    an oversized commit is the client's to fix, the rest is worth a retry.
    """
    if isinstance(error, RecordTooLargeError):
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    if isinstance(error, LogStorageError):
        return ErrorCode.NOT_COORDINATOR
    return ErrorCode.COORDINATOR_NOT_AVAILABLE


# -- the store ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Write:
    group_id: str
    updates: tuple[OffsetUpdate, ...]
    answer: asyncio.Future[BaseException | None]  # the error, or None once applied
    finished: bool = False
    error: BaseException | None = field(default=None)


class OffsetStore:
    """Every group's committed offsets, in memory and in the offsets topic."""

    def __init__(
        self, log: Log, clock: Clock, *, topic: str = OFFSETS_TOPIC, partitions: int = 1
    ) -> None:
        assert partitions >= 1
        self.log = log
        self.clock = clock
        self.topic = topic
        self.partitions = partitions  # the existing topic's count wins, see load()
        self.skipped_records = 0  # records the replay could not decode
        self._offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self._unapplied: deque[_Write] = deque()
        self._appender: ThreadPoolExecutor | None = None

    # -- loading --------------------------------------------------------------------------

    def load(self) -> None:
        """Create the topic if needed and replay it. Synchronous: run it in a thread."""
        if not self.log.has_topic(self.topic):
            config = {"cleanup.policy": "compact", "segment.bytes": _SEGMENT_BYTES}
            self.log.create_topic(self.topic, self.partitions, config)
        info = self.log.topic(self.topic)
        if info.partitions != self.partitions:
            logger.warning(
                "%s has %d partitions, not the %d configured; keeping %d, where its "
                "offsets already are", self.topic, info.partitions, self.partitions,
                info.partitions,
            )
            self.partitions = info.partitions
        if not info.config.compact:
            logger.warning(
                "%s has cleanup.policy=%s: retention may delete committed offsets; set it "
                "to compact", self.topic, info.config.cleanup_policy,
            )
        for partition in range(self.partitions):
            self._replay(self.log.partition(self.topic, partition))
        self._appender = ThreadPoolExecutor(1, thread_name_prefix="streamer-offsets")

    def _replay(self, partition: PartitionLog) -> None:
        for record in replay_records(partition, self._skipped):
            self._replay_record(partition, record)

    def _skipped(self) -> None:
        self.skipped_records += 1

    def _replay_record(self, partition: PartitionLog, record: Any) -> None:
        if record.key is None:
            return
        try:
            decoded = decode_key(record.key)
            if decoded is None:
                return
            value = None if record.value is None else decode_value(record.value)
        except (ValueError, struct.error, UnicodeDecodeError) as error:
            self.skipped_records += 1
            logger.warning(
                "%s offset %d is not a committed offset, skipped: %s",
                partition.name, record.offset, error,
            )
            return
        self._apply(decoded[0], [(decoded[1], decoded[2], value)])

    # -- reading --------------------------------------------------------------------------

    def get(self, group_id: str, topic: str, partition: int) -> CommittedOffset | None:
        return self._offsets.get(group_id, {}).get((topic, partition))

    def group_offsets(self, group_id: str) -> list[tuple[str, int, CommittedOffset]]:
        """The group's committed offsets, by topic and partition."""
        offsets = self._offsets.get(group_id, {})
        return [(topic, p, offsets[(topic, p)]) for topic, p in sorted(offsets)]

    def has_group(self, group_id: str) -> bool:
        return group_id in self._offsets

    def group_ids(self) -> list[str]:
        return list(self._offsets)

    def count(self, group_id: str) -> int:
        return len(self._offsets.get(group_id, {}))

    # -- writing --------------------------------------------------------------------------

    async def write(self, group_id: str, updates: Sequence[OffsetUpdate]) -> None:
        """Store ``updates`` as one batch; return once durable and applied.

        Raises :class:`LogError` if the log refused or failed the write; the in-memory
        offsets are then unchanged. A cancelled caller does not cancel the write.
        """
        assert updates, "an empty commit writes nothing"
        if self._appender is None:  # a deletion that waited for other writes may get here
            raise LogError(f"the offsets store of {self.topic} is closed")
        loop = asyncio.get_running_loop()
        partition = self.log.partition(self.topic, partition_for(group_id, self.partitions))
        batch = _encode_batch(group_id, updates, self.clock.time_ms())
        write = _Write(group_id, tuple(updates), loop.create_future())
        self._unapplied.append(write)
        append = functools.partial(partition.append, batch, wait_durable=False)
        appended = loop.run_in_executor(self._appender, append)
        appended.add_done_callback(functools.partial(self._appended, partition, write))
        error = await asyncio.shield(write.answer)
        if error is not None:
            raise error

    async def delete_group(self, group_id: str) -> None:
        """Tombstone every committed offset of ``group_id``; raises :class:`LogError`.

        The caller has stopped new commits to the group; the ones under way finish first,
        so none of their offsets outlives the deletion.
        """
        under_way = [write.answer for write in self._unapplied if write.group_id == group_id]
        if under_way:
            await asyncio.gather(*under_way)
        tombstones = [(topic, p, None) for topic, p, _ in self.group_offsets(group_id)]
        if tombstones:
            await self.write(group_id, tombstones)

    def _appended(
        self, partition: PartitionLog, write: _Write, appended: asyncio.Future[AppendResult]
    ) -> None:
        error = _failure(appended)
        if error is not None or not partition.config.flush_every_append:
            self._finish(write, error)  # flush.ms > 0 or -1: durability is the OS's or later
            return
        up_to = appended.result().last_offset + 1
        flushed = asyncio.ensure_future(asyncio.to_thread(partition.flush, up_to))
        flushed.add_done_callback(lambda future: self._finish(write, _failure(future)))

    def _finish(self, write: _Write, error: BaseException | None) -> None:
        write.finished = True
        write.error = error
        while self._unapplied and self._unapplied[0].finished:
            done = self._unapplied.popleft()
            if done.error is None:
                self._apply(done.group_id, done.updates)
            if not done.answer.done():
                done.answer.set_result(done.error)

    def _apply(self, group_id: str, updates: Sequence[OffsetUpdate]) -> None:
        offsets = self._offsets.setdefault(group_id, {})
        for topic, partition, committed in updates:
            if committed is None:
                offsets.pop((topic, partition), None)
            else:
                offsets[(topic, partition)] = committed
        if not offsets:
            del self._offsets[group_id]

    async def close(self) -> None:
        """Wait for the writes under way, then stop the append thread."""
        if self._unapplied:
            await asyncio.gather(*(write.answer for write in self._unapplied))
        if self._appender is not None:
            self._appender.shutdown(wait=False)  # idle: every append has answered
            self._appender = None


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return LogError("the offsets write was cancelled before it finished")
    return future.exception()
