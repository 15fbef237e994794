"""Errors of the storage engine; the tree is drawn in :mod:`streamer.errors`.

``kafka_error_code`` is the code the protocol layer answers with, so a Kafka client sees
the same condition it would see from Kafka.
"""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = [
    "CorruptLogError",
    "CorruptRecordError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "LogError",
    "LogStorageError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "ProducerError",
    "ProducerFencedError",
    "RecordTooLargeError",
    "TopicExistsError",
    "UnknownTopicOrPartitionError",
]


class LogError(StreamerError):
    """Base class of the storage engine's errors."""

    kafka_error_code: int = -1  # UNKNOWN_SERVER_ERROR


class InvalidRecordError(LogError):
    """A batch handed to append is not acceptable; the log is unchanged."""

    kafka_error_code = 87  # INVALID_RECORD


class CorruptRecordError(InvalidRecordError):
    """A batch is damaged: bad CRC, wrong magic, truncated or impossible lengths."""

    kafka_error_code = 2  # CORRUPT_MESSAGE


class RecordTooLargeError(InvalidRecordError):
    """A batch is larger than the topic's ``max.message.bytes``."""

    kafka_error_code = 10  # MESSAGE_TOO_LARGE


class ProducerError(LogError):
    """The idempotent-producer checks refused a batch; the log is unchanged."""


class ProducerFencedError(ProducerError):
    """The batch's producer epoch is older than the one the log knows.

    A newer instance of the same producer has taken over; this one must stop writing.
    """

    kafka_error_code = 47  # INVALID_PRODUCER_EPOCH


class OutOfOrderSequenceError(ProducerError):
    """The batch's sequence number does not follow the producer's last one."""

    kafka_error_code = 45  # OUT_OF_ORDER_SEQUENCE_NUMBER


class UnknownTopicOrPartitionError(LogError):
    kafka_error_code = 3


class InvalidTopicError(LogError):
    """A topic name Kafka would refuse: empty, ``.``/``..``, too long or odd characters."""

    kafka_error_code = 17  # INVALID_TOPIC_EXCEPTION


class InvalidPartitionsError(LogError):
    kafka_error_code = 37  # INVALID_PARTITIONS


class TopicExistsError(LogError):
    kafka_error_code = 36


class InvalidConfigError(LogError):
    kafka_error_code = 40  # INVALID_CONFIG


class OffsetOutOfRangeError(LogError):
    kafka_error_code = 1


class LogStorageError(LogError):
    """The filesystem failed under an operation (disk full, I/O error).

    The operation was undone where it could be: an append that failed to write is
    truncated away, so no partial batch stays in the log.
    """

    kafka_error_code = 56  # KAFKA_STORAGE_ERROR


class CorruptLogError(LogError):
    """Data already in the log is damaged, found where recovery does not repair it.

    Operator action: the named file holds a batch whose CRC no longer matches. Restore the
    partition from a replica or backup, or delete the records before ``offset`` with
    DeleteRecords if losing them is acceptable.
    """

    kafka_error_code = 2  # CORRUPT_MESSAGE

    def __init__(self, message: str, *, path: str, topic: str, partition: int, offset: int):
        super().__init__(f"{message} ({topic}/{partition} offset {offset}, file {path})")
        self.path = path
        self.topic = topic
        self.partition = partition
        self.offset = offset
