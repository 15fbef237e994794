"""What flows through an app: one :class:`Event` per record read from a topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Event", "Headers", "TopicPartition"]

Headers = tuple[tuple[str, bytes | None], ...]  # a header value may be null


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(slots=True)
class Event:
    """A record and where it came from.

    Transports build events with raw ``key``/``value`` bytes; the runtime replaces them with
    the topic's decoded key and value before an agent sees the event.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    key: Any
    value: Any
    headers: Headers = ()
    # The bytes as read, kept for dead-letter topics once key and value are decoded.
    raw_key: bytes | None = None
    raw_value: bytes | None = None

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)
