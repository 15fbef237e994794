"""How an app reaches its log: one interface, two transports.

- :class:`~streamer.transport.embedded.EmbeddedTransport`: direct calls into
  :mod:`streamer.log` in this process, no sockets (``memory://``, a path, ``file://``).
- :class:`~streamer.transport.kafka.KafkaTransport`: aiokafka to any Kafka-protocol broker
  (``kafka://host:port``: ``streamer broker``, Kafka, Redpanda).

The runtime talks only to :class:`~streamer.transport.base.Transport`.
"""

from .base import (
    ISOLATION_LEVELS,
    PartitionReader,
    RebalanceListener,
    TopicSpec,
    Transport,
    TransportConsumer,
    open_transport,
)
from .embedded import LogInUseError
from .kafka_client import (
    TransactionAbortedError,
    TransactionError,
    TransactionFencedError,
    TransportError,
)

__all__ = [
    "ISOLATION_LEVELS",
    "LogInUseError",
    "PartitionReader",
    "RebalanceListener",
    "TopicSpec",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionFencedError",
    "Transport",
    "TransportConsumer",
    "TransportError",
    "open_transport",
]
