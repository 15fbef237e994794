"""Idempotent-producer state of one partition.

For each producer id the log keeps the epoch and the last five batches' sequence ranges
with their offsets (Kafka's ``NUM_BATCHES_TO_RETAIN``, matching a producer's limit of five
in-flight requests). A retried batch that matches one of them is a duplicate: the append
answers with the original offsets and writes nothing. The state is rebuilt on open from
the latest snapshot plus the batch headers after it; no record is decoded.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field

from .batch import BatchHeader
from .errors import OutOfOrderSequenceError, ProducerFencedError

__all__ = ["BatchSequence", "ProducerEntry", "ProducerStateTable"]

BATCHES_RETAINED = 5
_SEQUENCE_MODULUS = 1 << 31


@dataclass(frozen=True, slots=True)
class BatchSequence:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    last_append_ms: int
    batches: deque[BatchSequence] = field(default_factory=lambda: deque(maxlen=BATCHES_RETAINED))

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else -1


class ProducerStateTable:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, header: BatchHeader, *, topic_partition: str) -> BatchSequence | None:
        """Check an idempotent batch before it is appended.

        Returns the original batch when ``header`` is a retry of one of the last five,
        None when it may be appended, and raises when it must be refused.
        """
        entry = self.producers.get(header.producer_id)
        if entry is None:
            # An unknown producer (new, or its state expired) may start at any sequence,
            # as in Kafka since KIP-360.
            return None
        if header.producer_epoch < entry.epoch:
            raise ProducerFencedError(
                f"{topic_partition}: producer {header.producer_id} epoch "
                f"{header.producer_epoch} is older than the current epoch {entry.epoch}; "
                "a newer instance of this producer has taken over"
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise OutOfOrderSequenceError(
                    f"{topic_partition}: producer {header.producer_id} started epoch "
                    f"{header.producer_epoch} at sequence {header.base_sequence}, not 0"
                )
            return None
        for batch in entry.batches:
            if (
                batch.first_sequence == header.base_sequence
                and batch.last_sequence == header.last_sequence
            ):
                return batch
        expected = (entry.last_sequence + 1) % _SEQUENCE_MODULUS
        if header.base_sequence != expected:
            raise OutOfOrderSequenceError(
                f"{topic_partition}: producer {header.producer_id} sent sequence "
                f"{header.base_sequence}, expected {expected}"
            )
        return None

    def update(self, header: BatchHeader, now_ms: int) -> None:
        """Record an appended batch (``header`` carries its assigned offsets)."""
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = ProducerEntry(header.producer_id, header.producer_epoch, now_ms)
            self.producers[header.producer_id] = entry
        entry.last_append_ms = now_ms
        if header.base_sequence >= 0:
            entry.batches.append(
                BatchSequence(
                    header.base_sequence,
                    header.last_sequence,
                    header.base_offset,
                    header.last_offset,
                )
            )

    def last_offsets(self) -> dict[int, int]:
        """Each producer's last batch offset: what compaction must not erase."""
        return {
            producer_id: entry.batches[-1].base_offset
            for producer_id, entry in self.producers.items()
            if entry.batches
        }

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        expired = [
            producer_id
            for producer_id, entry in self.producers.items()
            if now_ms - entry.last_append_ms > expiration_ms
        ]
        for producer_id in expired:
            del self.producers[producer_id]
        return len(expired)

    def to_bytes(self) -> bytes:
        rows = [
            [entry.producer_id, entry.epoch, entry.last_append_ms, _rows(entry)]
            for entry in self.producers.values()
        ]
        return json.dumps(rows).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ProducerStateTable:
        table = cls()
        for producer_id, epoch, last_append_ms, batches in json.loads(data):
            entry = ProducerEntry(producer_id, epoch, last_append_ms)
            entry.batches.extend(BatchSequence(*row) for row in batches)
            table.producers[producer_id] = entry
        return table


def _rows(entry: ProducerEntry) -> list[tuple[int, int, int, int]]:
    return [
        (b.first_sequence, b.last_sequence, b.base_offset, b.last_offset) for b in entry.batches
    ]
