"""streamer.log: the embedded log: segments of Kafka v2 record batches on disk.

The storage engine is synchronous and knows nothing of sockets; it takes a filesystem and a
clock so tests can crash it and move time::

    from streamer.log import Log

    with Log.open("./streamer-data") as log:
        log.create_topic("events", partitions=4)
        partition = log.partition("events", 0)
        result = partition.append(batch_bytes)  # fsynced before it returns
        records = partition.read(result.base_offset).records
"""

from .clock import Clock, ManualClock, SystemClock
from .compaction import CompactionResult, compact
from .config import FLUSH_BY_OS, FLUSH_EVERY_APPEND, TopicConfig
from .errors import (
    CorruptLogError,
    CorruptRecordError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    LogError,
    LogStorageError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    ProducerError,
    ProducerFencedError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicOrPartitionError,
)
from .fs import Filesystem, MemoryFilesystem, OsFilesystem
from .partition import AppendResult, PartitionLog, PartitionStatistics
from .reads import ReadResult
from .storage import Log, LogStatistics, TopicInfo

__all__ = [
    "FLUSH_BY_OS",
    "FLUSH_EVERY_APPEND",
    "AppendResult",
    "Clock",
    "CompactionResult",
    "CorruptLogError",
    "CorruptRecordError",
    "Filesystem",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "Log",
    "LogError",
    "LogStatistics",
    "LogStorageError",
    "ManualClock",
    "MemoryFilesystem",
    "OffsetOutOfRangeError",
    "OsFilesystem",
    "OutOfOrderSequenceError",
    "PartitionLog",
    "PartitionStatistics",
    "ProducerError",
    "ProducerFencedError",
    "ReadResult",
    "RecordTooLargeError",
    "SystemClock",
    "TopicConfig",
    "TopicExistsError",
    "TopicInfo",
    "UnknownTopicOrPartitionError",
    "compact",
]
