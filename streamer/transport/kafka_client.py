"""What the Kafka transport's producer, admin client and consumer share: its errors, its
timeouts and a bounded start.

The errors hang under :class:`~streamer.errors.StreamerError`::

    TransportError                a transport could not do what was asked
    ├── BrokerUnreachableError    no broker answered at the bootstrap address in time
    ├── TopicSetupError           a topic could not be created or its metadata never appeared
    ├── DeliveryError             the broker refused (or never acknowledged) produced records
    ├── ConsumerError             a consumer-group call failed (fetch, commit, rebalance)
    └── TransactionError          a transaction (exactly-once) did not commit
        ├── TransactionAbortedError   aborted, or must be: redo the work since the last commit
        └── TransactionFencedError    another producer with the same transactional id, or
                                      the group's next generation, took over: stop writing

Both transports raise the transaction errors, so the runtime tells what it may retry (an
abort) from what it must never retry (a fence) the same way on either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiokafka.errors import BrokerResponseError, KafkaError

from ..errors import StreamerError

__all__ = [
    "CONNECT_TIMEOUT_MS",
    "REQUEST_TIMEOUT_MS",
    "BrokerUnreachableError",
    "ConsumerError",
    "DeliveryError",
    "TopicSetupError",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionFencedError",
    "TransportError",
    "explain",
    "start_bounded",
]

# A client's start (bootstrap: connect + metadata) must finish within this, or the broker is
# reported unreachable instead of the worker hanging on a wrong address.
CONNECT_TIMEOUT_MS = 10_000
# One request to the broker (produce, metadata, admin); a produce retried past this fails.
REQUEST_TIMEOUT_MS = 30_000


class TransportError(StreamerError):
    """A transport could not do what was asked."""


class BrokerUnreachableError(TransportError):
    """No broker answered at the bootstrap address in time."""

    def __init__(self, bootstrap: str, message: str) -> None:
        super().__init__(message)
        self.bootstrap = bootstrap


class TopicSetupError(TransportError):
    """A topic could not be created, or its metadata did not appear in time."""

    def __init__(self, topic: str, message: str) -> None:
        super().__init__(message)
        self.topic = topic


class DeliveryError(TransportError):
    """The broker refused, or never acknowledged, records produced to a partition."""

    def __init__(self, topic: str, partition: int, records: int, cause: BaseException) -> None:
        super().__init__(
            f"{records} record(s) produced to {topic}[{partition}] were not delivered: "
            f"{explain(cause)}"
        )
        self.topic = topic
        self.partition = partition
        self.records = records


class ConsumerError(TransportError):
    """A consumer-group call failed: fetch, commit or a rebalance callback."""


class TransactionError(TransportError):
    """A transaction did not commit; ``transactional_id`` names its producer."""

    def __init__(self, transactional_id: str, message: str) -> None:
        super().__init__(f"transaction of {transactional_id!r}: {message}")
        self.transactional_id = transactional_id


class TransactionAbortedError(TransactionError):
    """The transaction was aborted, or can only be: nothing of it is visible to
    ``read_committed`` readers, and the work since the last commit must be redone."""


class TransactionFencedError(TransactionError):
    """This producer may never write again: a newer producer with the same transactional id
    (a restarted worker, or a timed-out transaction's abort) or the consumer group's next
    generation (its partitions moved to another member) took over."""


def explain(exc: BaseException) -> str:
    """An aiokafka error as a sentence: the broker's error name and what it means."""
    if isinstance(exc, BrokerResponseError):
        return f"{exc.message} (Kafka error {exc.errno}): {exc.description}"
    return str(exc) or type(exc).__name__


async def start_bounded(
    start: Awaitable[None],
    stop: Callable[[], Awaitable[None]],
    *,
    bootstrap: str,
    what: str,
    timeout_ms: int,
) -> None:
    """Await ``start`` (a client's bootstrap) for at most ``timeout_ms``; on failure, ``stop``
    the half-started client and raise :class:`BrokerUnreachableError` naming the address."""
    try:
        await asyncio.wait_for(start, timeout_ms / 1000)
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await stop()
        reason = "no answer" if isinstance(exc, TimeoutError) else explain(exc)
        raise BrokerUnreachableError(
            bootstrap,
            f"the {what} could not reach a Kafka broker at {bootstrap} within {timeout_ms} ms "
            f"({reason}); check that the broker runs and listens on that address",
        ) from exc
