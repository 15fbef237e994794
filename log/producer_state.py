"""Idempotent and transactional producer state of one partition.

For each producer id the log keeps the epoch and the last five batches' sequence ranges
with their offsets (Kafka's ``NUM_BATCHES_TO_RETAIN``, matching a producer's limit of five
in-flight requests). A retried batch that matches one of them is a duplicate: the append
answers with the original offsets and writes nothing.

Transactions: a producer's first transactional batch opens its transaction in this
partition (``ongoing``: producer id → first offset); its COMMIT or ABORT marker closes it,
and an abort is remembered as an :class:`AbortedTransaction` (first offset to the marker's
offset) so that read_committed readers can skip its batches. The oldest open transaction's
first offset is the partition's last stable offset.

All of it is saved in the producer-state snapshot (written at every roll and clean close)
and rebuilt on open from the newest snapshot plus the batches after it: only headers are
read, and the one record of each transaction marker.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .batch import BatchHeader
from .errors import OutOfOrderSequenceError, ProducerFencedError

__all__ = ["AbortedTransaction", "BatchSequence", "ProducerEntry", "ProducerStateTable"]

BATCHES_RETAINED = 5
_SEQUENCE_MODULUS = 1 << 31


@dataclass(frozen=True, slots=True)
class BatchSequence:
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


class AbortedTransaction(NamedTuple):
    """An aborted transaction's range in one partition: its batches lie in
    ``[first_offset, last_offset]``, and ``last_offset`` is the ABORT marker's offset."""

    producer_id: int
    first_offset: int
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
        # Open transactions: producer id → the offset of its first transactional batch.
        self.ongoing: dict[int, int] = {}
        # Aborted transactions in marker order, so by ascending ``last_offset``.
        self.aborted: list[AbortedTransaction] = []

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
        if header.is_transactional and header.producer_id not in self.ongoing:
            self.ongoing[header.producer_id] = header.base_offset
        if header.base_sequence >= 0:
            entry.batches.append(
                BatchSequence(
                    header.base_sequence,
                    header.last_sequence,
                    header.base_offset,
                    header.last_offset,
                )
            )

    def check_marker(self, producer_id: int, producer_epoch: int, *, topic_partition: str) -> None:
        """Refuse a transaction marker from an epoch older than the producer's."""
        entry = self.producers.get(producer_id)
        if entry is not None and producer_epoch < entry.epoch:
            raise ProducerFencedError(
                f"{topic_partition}: transaction marker for producer {producer_id} has epoch "
                f"{producer_epoch}, older than the current epoch {entry.epoch}"
            )

    def end_transaction(
        self, producer_id: int, producer_epoch: int, *, commit: bool, offset: int, now_ms: int
    ) -> AbortedTransaction | None:
        """Record a COMMIT or ABORT marker written at ``offset``: close the producer's open
        transaction (if any) and move its epoch up to ``producer_epoch``. Returns the
        aborted range an abort of an open transaction adds."""
        entry = self.producers.get(producer_id)
        if entry is None or producer_epoch > entry.epoch:
            # A new epoch forgets the old epoch's sequences, as a data batch's would.
            entry = ProducerEntry(producer_id, producer_epoch, now_ms)
            self.producers[producer_id] = entry
        entry.last_append_ms = now_ms
        first_offset = self.ongoing.pop(producer_id, None)
        if first_offset is None or commit:
            return None
        aborted = AbortedTransaction(producer_id, first_offset, offset)
        self.aborted.append(aborted)
        return aborted

    def aborted_overlapping(self, start: int, end: int) -> list[AbortedTransaction]:
        """Aborted transactions whose range meets ``[start, end)``, by first offset."""
        if not self.aborted or start >= end:
            return []
        # Entries before ``low`` ended before ``start``; later ones may have begun anywhere.
        low = bisect.bisect_left(self.aborted, start, key=_last_offset)
        found = [entry for entry in self.aborted[low:] if entry.first_offset < end]
        found.sort(key=_first_offset)
        return found

    def forget_aborted_before(self, offset: int) -> None:
        """Drop aborted ranges that end before ``offset`` (the new log start)."""
        del self.aborted[: bisect.bisect_left(self.aborted, offset, key=_last_offset)]

    def last_offsets(self) -> dict[int, int]:
        """Each producer's last batch offset: what compaction must not erase."""
        return {
            producer_id: entry.batches[-1].base_offset
            for producer_id, entry in self.producers.items()
            if entry.batches
        }

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        expired = [  # a producer with an open transaction stays until its marker
            producer_id
            for producer_id, entry in self.producers.items()
            if now_ms - entry.last_append_ms > expiration_ms and producer_id not in self.ongoing
        ]
        for producer_id in expired:
            del self.producers[producer_id]
        return len(expired)

    def to_bytes(self) -> bytes:
        rows = [
            [entry.producer_id, entry.epoch, entry.last_append_ms, _rows(entry)]
            for entry in self.producers.values()
        ]
        return json.dumps(
            {
                "producers": rows,
                "ongoing": sorted(self.ongoing.items()),
                "aborted": [list(entry) for entry in self.aborted],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ProducerStateTable:
        """The table a snapshot holds; raises ValueError or TypeError if it is damaged."""
        table = cls()
        loaded: Any = json.loads(data)
        if isinstance(loaded, list):  # the format before transactions: producers alone
            loaded = {"producers": loaded}
        if not isinstance(loaded, dict):
            raise ValueError("a producer-state snapshot is a JSON object")
        for producer_id, epoch, last_append_ms, batches in loaded.get("producers", []):
            entry = ProducerEntry(producer_id, epoch, last_append_ms)
            entry.batches.extend(BatchSequence(*row) for row in batches)
            table.producers[producer_id] = entry
        table.ongoing = {int(pid): int(first) for pid, first in loaded.get("ongoing", [])}
        table.aborted = [AbortedTransaction(*map(int, row)) for row in loaded.get("aborted", [])]
        last_offsets = [entry.last_offset for entry in table.aborted]
        if last_offsets != sorted(last_offsets):
            raise ValueError("aborted transactions out of order in a producer-state snapshot")
        return table


def _last_offset(entry: AbortedTransaction) -> int:
    return entry.last_offset


def _first_offset(entry: AbortedTransaction) -> int:
    return entry.first_offset


def _rows(entry: ProducerEntry) -> list[tuple[int, int, int, int]]:
    return [
        (b.first_sequence, b.last_sequence, b.base_offset, b.last_offset) for b in entry.batches
    ]
