"""Kafka transactions: the coordinator of transactional ids and its durable state.

:class:`TransactionCoordinator` is owned by the broker (``broker.transactions``); the
Kafka-protocol handlers (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
TxnOffsetCommit, EndTxn) and the embedded transport call its async Python API. Its state
lives in the compacted ``__transaction_state`` topic (:mod:`.store`); the partitions'
side (markers, the last stable offset, aborted transactions) is in
:mod:`streamer.log.partition`.
"""

from .coordinator import TransactionCoordinator, TransactionStatistics
from .errors import (
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    FencedInstanceIdError,
    GroupFencedError,
    InvalidGroupIdError,
    InvalidProducerIdMappingError,
    InvalidTransactionTimeoutError,
    InvalidTxnRequestError,
    InvalidTxnStateError,
    ProducerFencedError,
    TransactionError,
    TransactionPartitionsError,
)
from .state import PendingOffset, Transaction, TransactionState
from .store import TRANSACTION_STATE_TOPIC

__all__ = [
    "TRANSACTION_STATE_TOPIC",
    "ConcurrentTransactionsError",
    "CoordinatorLoadInProgressError",
    "CoordinatorNotAvailableError",
    "FencedInstanceIdError",
    "GroupFencedError",
    "InvalidGroupIdError",
    "InvalidProducerIdMappingError",
    "InvalidTransactionTimeoutError",
    "InvalidTxnRequestError",
    "InvalidTxnStateError",
    "PendingOffset",
    "ProducerFencedError",
    "Transaction",
    "TransactionCoordinator",
    "TransactionError",
    "TransactionPartitionsError",
    "TransactionState",
    "TransactionStatistics",
]
