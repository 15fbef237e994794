"""One transactional id's state: its producer, its epoch and its current transaction.

States carry Kafka's names and numbers (as stored)::

    Empty ─────────┐ AddPartitionsToTxn / AddOffsetsToTxn
    CompleteCommit ┼──────────────────────────────────────▶ Ongoing
    CompleteAbort ─┘                                          │
                                   EndTxn(commit)             │ EndTxn(abort); a timeout or a
                          ┌───────────────────────────────────┤ new InitProducerId (epoch bumped)
                          ▼                                   ▼
                    PrepareCommit                       PrepareAbort
                          │ markers, then offsets             │ markers
                          ▼                                   ▼
                    CompleteCommit                      CompleteAbort

    Empty / Complete*: InitProducerId bumps the epoch (or gives a new producer id).

A :class:`Transaction` is immutable: the coordinator makes the next one with the methods
below, writes it to the state topic, and only then installs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import IntEnum
from typing import NamedTuple

from .errors import ConcurrentTransactionsError, InvalidTxnStateError, ProducerFencedError

__all__ = ["EPOCH_MAX", "PendingOffset", "TopicPartition", "Transaction", "TransactionState"]

EPOCH_MAX = 32767  # an int16
TopicPartition = tuple[str, int]


class TransactionState(IntEnum):
    """Kafka's transaction states, numbered as its state topic stores them."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5

    @property
    def label(self) -> str:
        """Kafka's name: "Empty", "Ongoing", "PrepareCommit", ..."""
        return "".join(word.capitalize() for word in self.name.split("_"))

    @property
    def completing(self) -> bool:
        """The outcome is decided and being written to the partitions."""
        return self in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT)


class PendingOffset(NamedTuple):
    """A consumer offset committed in a transaction, applied to the group if it commits."""

    offset: int
    leader_epoch: int
    metadata: str


@dataclasses.dataclass(frozen=True, slots=True)
class Transaction:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TransactionState
    update_ms: int
    start_ms: int = -1  # when the current transaction began (Ongoing and after)
    # The producer before the last epoch bump or id rotation: a producer that retries a bump
    # whose answer it lost (KIP-360) is recognised by it.
    last_producer_id: int = -1
    last_producer_epoch: int = -1
    partitions: frozenset[TopicPartition] = frozenset()
    # The groups added to the transaction, each with the offsets committed in it so far.
    # Never changed in place: each transition builds new mappings.
    offsets: Mapping[str, Mapping[TopicPartition, PendingOffset]] = dataclasses.field(
        default_factory=dict
    )

    @property
    def epoch_exhausted(self) -> bool:
        """The epoch cannot be bumped twice more (a fence and a bump): rotate the id."""
        return self.producer_epoch >= EPOCH_MAX - 1

    def may_resume(self, producer_id: int, producer_epoch: int) -> bool:
        """Whether a producer naming ``producer_id`` may bump this id's epoch (KIP-360): it
        is the current id, or the one before a rotation and this is a retry of it."""
        return producer_id == self.producer_id or (
            producer_id == self.last_producer_id and producer_epoch >= EPOCH_MAX - 1
        )

    def must_end(self, commit: bool) -> bool:
        """Whether EndTxn has work to do: True for an open transaction, False for a retry
        of the end already made; raises for any other state."""
        if self.state is TransactionState.ONGOING:
            return True
        done, deciding = (
            (TransactionState.COMPLETE_COMMIT, TransactionState.PREPARE_COMMIT)
            if commit
            else (TransactionState.COMPLETE_ABORT, TransactionState.PREPARE_ABORT)
        )
        if self.state is done:
            return False
        if self.state is deciding:
            raise ConcurrentTransactionsError(
                f"transactional id {self.transactional_id!r}: its end is being completed; retry"
            )
        raise InvalidTxnStateError(
            f"transactional id {self.transactional_id!r}: cannot "
            f"{'commit' if commit else 'abort'} in state {self.state.label}"
        )

    def fenced_error(self, producer_id: int, producer_epoch: int) -> ProducerFencedError:
        return ProducerFencedError(
            f"transactional id {self.transactional_id!r}: producer {producer_id} epoch "
            f"{producer_epoch} is fenced (current: producer {self.producer_id} epoch "
            f"{self.producer_epoch}); a newer producer with this transactional id took over, "
            "or its transaction timed out"
        )

    def added(
        self, now_ms: int, partitions: frozenset[TopicPartition] = frozenset(),
        group_id: str | None = None,
    ) -> Transaction:  # fmt: skip
        """Ongoing, with ``partitions`` and ``group_id`` joined (a new transaction if none)."""
        ongoing = self.state is TransactionState.ONGOING
        groups = dict(self.offsets) if ongoing else {}
        if group_id is not None:
            groups.setdefault(group_id, {})
        return dataclasses.replace(
            self,
            state=TransactionState.ONGOING,
            start_ms=self.start_ms if ongoing else now_ms,
            update_ms=now_ms,
            partitions=(self.partitions if ongoing else frozenset()) | partitions,
            offsets=groups,
        )

    def with_offsets(
        self, group_id: str, offsets: dict[TopicPartition, PendingOffset], now_ms: int
    ) -> Transaction:
        groups = {**self.offsets, group_id: {**self.offsets.get(group_id, {}), **offsets}}
        return dataclasses.replace(self, update_ms=now_ms, offsets=groups)

    def prepared(self, commit: bool, now_ms: int) -> Transaction:
        state = TransactionState.PREPARE_COMMIT if commit else TransactionState.PREPARE_ABORT
        return dataclasses.replace(self, state=state, update_ms=now_ms)

    def fenced(self, now_ms: int) -> Transaction:
        """PrepareAbort at the next epoch: the producer's writes at its epoch are refused
        from the markers on, and its coordinator calls from now."""
        assert self.producer_epoch < EPOCH_MAX, "epochs are rotated before they run out"
        return dataclasses.replace(
            self,
            producer_epoch=self.producer_epoch + 1,
            last_producer_epoch=-1,
            state=TransactionState.PREPARE_ABORT,
            update_ms=now_ms,
        )

    def completed(self, now_ms: int) -> Transaction:
        commit = self.state is TransactionState.PREPARE_COMMIT
        state = TransactionState.COMPLETE_COMMIT if commit else TransactionState.COMPLETE_ABORT
        return dataclasses.replace(
            self, state=state, update_ms=now_ms, partitions=frozenset(), offsets={}
        )

    def bumped(self, timeout_ms: int, now_ms: int, *, remember: bool) -> Transaction:
        """Empty at the next epoch; ``remember`` the current one for a retried bump."""
        return dataclasses.replace(
            self,
            producer_epoch=self.producer_epoch + 1,
            last_producer_id=self.producer_id if remember else -1,
            last_producer_epoch=self.producer_epoch if remember else -1,
            timeout_ms=timeout_ms,
            state=TransactionState.EMPTY,
            update_ms=now_ms,
            start_ms=-1,
        )

    def rotated(
        self, producer_id: int, timeout_ms: int, now_ms: int, *, remember: bool
    ) -> Transaction:
        """Empty with a new producer id at epoch 0, the old id remembered (KIP-360)."""
        return dataclasses.replace(
            self,
            producer_id=producer_id,
            producer_epoch=0,
            last_producer_id=self.producer_id,
            last_producer_epoch=self.producer_epoch if remember else -1,
            timeout_ms=timeout_ms,
            state=TransactionState.EMPTY,
            update_ms=now_ms,
            start_ms=-1,
        )

