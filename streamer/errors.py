"""The root of every error streamer raises.

Each subsystem hangs its own subtree under :class:`StreamerError`::

    StreamerError
    ├── LogError                      streamer.log: the storage engine
    │   ├── InvalidRecordError        a batch from a client is malformed; nothing was written
    │   │   ├── CorruptRecordError    bad CRC, truncated, wrong magic or length
    │   │   └── RecordTooLargeError   larger than the topic's max.message.bytes
    │   ├── ProducerError             idempotent-producer checks refused the batch
    │   │   ├── ProducerFencedError   the producer's epoch is older than the log's
    │   │   └── OutOfOrderSequenceError
    │   ├── UnknownTopicOrPartitionError
    │   ├── InvalidTopicError
    │   ├── InvalidPartitionsError
    │   ├── TopicExistsError
    │   ├── InvalidConfigError
    │   ├── OffsetOutOfRangeError
    │   ├── LogStorageError           the filesystem failed (disk full, I/O error)
    │   └── CorruptLogError           data on disk is damaged; names the file and offset
    ├── ProtocolError                 streamer.log.protocol: a frame that is not valid Kafka
    │   ├── ProtocolDecodeError       short, bad lengths, invalid UTF-8, bytes left over
    │   ├── UnknownApiError           an API key streamer does not serve
    │   └── UnsupportedVersionError   a known API at a version streamer does not serve
    ├── StoreError                    streamer.state: a store cannot open, read or write
    └── TableError                    streamer.state: a table used where it cannot work
                                      (a key another worker owns, a stream not
                                      partitioned like the table)

Errors carry the context a user needs (topic, partition, offset, file) and, where a
Kafka client will see them, the Kafka error code the protocol layer sends.
"""

from __future__ import annotations

__all__ = ["StreamerError"]


class StreamerError(Exception):
    """Base class of all streamer errors."""
