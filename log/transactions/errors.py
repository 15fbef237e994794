"""Errors of the transaction coordinator's Python API.

Each says what the caller should do, the way a Kafka client reads the same error code::

    LogError
    ├── ProducerFencedError (streamer.log.errors)     fatal: a newer producer with this
    │                                                 transactional id (or a timeout) took over
    └── TransactionError
        ├── InvalidTxnStateError                      fatal: the call does not fit the state
        ├── InvalidProducerIdMappingError             fatal: not this transactional id's producer
        ├── InvalidTransactionTimeoutError            fatal: a timeout outside (0, max]
        ├── InvalidTxnRequestError                    fatal: an empty or oversized id, a
        │                                             producer id without its epoch
        ├── InvalidGroupIdError                       fatal: a group id that cannot be stored
        ├── TransactionPartitionsError                the partitions named cannot join (unknown,
        │                                             internal); nothing was added
        ├── GroupFencedError                          abortable: the consumer group moved on
        │                                             (stale generation, unknown member); abort,
        │                                             rejoin, replay
        │   └── FencedInstanceIdError                 fatal: a newer static member took over
        ├── ConcurrentTransactionsError               retriable: a previous transaction is
        │                                             still being completed
        ├── CoordinatorLoadInProgressError            retriable: the state is being loaded
        └── CoordinatorNotAvailableError              retriable: closed, or its state write failed

``retriable`` says whether the same call may simply be repeated.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import LogError, ProducerFencedError
from ..protocol.error_codes import ErrorCode

__all__ = [
    "ConcurrentTransactionsError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "FencedInstanceIdError",
    "GroupFencedError",
    "InvalidProducerIdMappingError",
    "InvalidTransactionTimeoutError",
    "InvalidGroupIdError",
    "InvalidTxnRequestError",
    "InvalidTxnStateError",
    "ProducerFencedError",
    "TransactionError",
    "TransactionPartitionsError",
    "response_code",
]


class TransactionError(LogError):
    """Base class of the transaction coordinator's errors."""

    retriable = False


class InvalidTxnStateError(TransactionError):
    """The call does not fit the transaction's state (EndTxn with no transaction, a commit
    of an aborted one, offsets for a group never added)."""

    kafka_error_code = ErrorCode.INVALID_TXN_STATE


class InvalidProducerIdMappingError(TransactionError):
    """The transactional id is unknown, or belongs to another producer id."""

    kafka_error_code = ErrorCode.INVALID_PRODUCER_ID_MAPPING


class InvalidTransactionTimeoutError(TransactionError):
    kafka_error_code = ErrorCode.INVALID_TRANSACTION_TIMEOUT


class InvalidTxnRequestError(TransactionError):
    kafka_error_code = ErrorCode.INVALID_REQUEST


class InvalidGroupIdError(TransactionError):
    kafka_error_code = ErrorCode.INVALID_GROUP_ID


class TransactionPartitionsError(TransactionError):
    """Some partitions cannot join the transaction; ``errors`` has a code for each of them."""

    kafka_error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    def __init__(self, message: str, errors: Mapping[tuple[str, int], ErrorCode]) -> None:
        super().__init__(message)
        self.errors = dict(errors)


class GroupFencedError(TransactionError):
    """The group no longer knows this member at this generation: it lost its partitions.

    The transaction must abort; the worker rejoins and replays from the committed offsets.
    """

    def __init__(self, message: str, error_code: ErrorCode) -> None:
        super().__init__(message)
        self.kafka_error_code = error_code


class FencedInstanceIdError(GroupFencedError):
    """A newer member took this static instance id: this one must stop."""


class ConcurrentTransactionsError(TransactionError):
    kafka_error_code = ErrorCode.CONCURRENT_TRANSACTIONS
    retriable = True


class CoordinatorLoadInProgressError(TransactionError):
    kafka_error_code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    retriable = True


class CoordinatorNotAvailableError(TransactionError):
    """The coordinator is closed, or could not write its state (the log refused or failed)."""

    retriable = True

    def __init__(self, message: str, error_code: ErrorCode) -> None:
        super().__init__(message)
        self.kafka_error_code = error_code


def response_code(error: LogError, *, producer_fenced: bool) -> int:
    """The code a handler answers ``error`` with.

    ``producer_fenced``: the request's version knows PRODUCER_FENCED (KIP-588); older
    versions say INVALID_PRODUCER_EPOCH, which clients of their time read as fenced.
    """
    if isinstance(error, ProducerFencedError):
        return ErrorCode.PRODUCER_FENCED if producer_fenced else ErrorCode.INVALID_PRODUCER_EPOCH
    return error.kafka_error_code
