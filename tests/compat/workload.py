"""What the compatibility tests send and how they check what comes back, for every client.

A :class:`Message` is one record as a producer hands it over: partition, key, value,
headers and an explicit CreateTime timestamp. Each client's test module converts the
records its consumer returns into the same shape, so that one comparison serves all three
clients.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.broker_process import BrokerProcess

__all__ = [
    "CODECS",
    "Header",
    "Message",
    "Received",
    "BROKER_STOPS",
    "by_partition",
    "check_round_trip",
    "codec_messages",
    "hour_ago_ms",
    "stop_broker",
    "unique_name",
    "varied_messages",
    "wait_until",
]

Header = tuple[str, bytes | None]
CODECS = ("gzip", "snappy", "lz4", "zstd")
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class Message:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Received:
    """One consumed record, in the shape every client's record is converted to."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int
    create_time: bool  # timestamp type CreateTime (not LogAppendTime)

    def as_sent(self) -> Message:
        return Message(self.partition, self.key, self.value, self.headers, self.timestamp_ms)


def unique_name(prefix: str) -> str:
    """A topic or group name no other test uses (tests share one broker per module)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def hour_ago_ms() -> int:
    """A base for explicit timestamps: recent enough that retention (7 days) keeps them."""
    return (int(time.time()) - 3600) * 1000


def varied_messages(
    partitions: int, count: int, *, null_header_values: bool = True,
    null_key_and_value: bool = True,
) -> list[Message]:
    """Keys, null keys, tombstones, binary and repeated headers, out-of-order timestamps.

    Kafka allows a header without a value, and a record whose key and value are both null;
    for a client that cannot send one (``null_header_values``, ``null_key_and_value``
    False), the messages leave it out.
    """
    base_ms = hour_ago_ms()
    messages = []
    for i in range(count):
        key: bytes | None
        if i % 7 == 3:
            key = None
        elif i % 5 == 0:
            key = bytes([i % 256, 0, 255, 10]) + b"\r\n"  # binary, with NUL and newlines
        else:
            key = f"key-{i % 11}".encode()
        value = None if i % 13 == 5 else f"value-{i}-".encode() + bytes(range(i % 256))
        if key is None and value is None and not null_key_and_value:
            key = b"key-of-a-tombstone"
        header_sets: list[tuple[Header, ...]] = [
            (),
            (("trace-id", f"trace-{i}".encode()),),
            (("dup", b"first"), ("dup", b"second"), ("bin", bytes([0, 255, 128, 10]))),
            (("empty", b""), ("ключ", "значение".encode())),
        ]
        if null_header_values:
            header_sets.append((("null-value", None), ("after-null", b"x")))
        headers = header_sets[i % len(header_sets)]
        # CreateTime is the producer's: not monotonic, and the broker must keep it as sent.
        timestamp_ms = base_ms + (i * 7919) % 100_000
        messages.append(Message(i % partitions, key, value, headers, timestamp_ms))
    return messages


def codec_messages(count: int) -> list[Message]:
    """Compressible records for one partition, so that batches really shrink."""
    base_ms = hour_ago_ms()
    return [
        Message(
            0,
            f"key-{i % 10}".encode(),
            (f"compressible value {i} " * 20).encode(),
            (("codec-header", f"h{i}".encode()),),
            base_ms + i,
        )
        for i in range(count)
    ]


def by_partition(messages: Iterable[Message]) -> dict[int, list[Message]]:
    grouped: dict[int, list[Message]] = defaultdict(list)
    for message in messages:
        grouped[message.partition].append(message)
    return dict(grouped)


def check_round_trip(sent: Sequence[Message], received: Sequence[Received]) -> None:
    """Every field back as sent, in order within each partition, at offsets 0, 1, 2, ...

    ``sent`` must be in send order; the producer must keep order within a partition.
    """
    expected = by_partition(sent)
    got: dict[int, list[Received]] = defaultdict(list)
    for record in received:
        got[record.partition].append(record)
    assert sorted(got) == sorted(expected), "records came back on other partitions"
    for partition, messages in expected.items():
        records = got[partition]
        assert [r.offset for r in records] == list(range(len(messages))), (
            f"partition {partition}: offsets {[r.offset for r in records][:20]}..."
        )
        assert all(r.create_time for r in records), f"partition {partition}: not CreateTime"
        for index, (record, message) in enumerate(zip(records, messages, strict=True)):
            assert record.as_sent() == message, f"partition {partition}, offset {index}"


# SIGTERM: the broker answers what is in flight and flushes; SIGKILL: it just dies.
BROKER_STOPS = ("sigterm", "sigkill")


def stop_broker(broker: BrokerProcess, how: str) -> None:
    if how == "sigterm":
        assert broker.stop() == 0, "streamer broker did not stop cleanly on SIGTERM"
    else:
        assert how == "sigkill", how
        broker.kill()


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    describe: Callable[[], str] = lambda: "",
) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took. Fails with ``what``
    and whatever ``describe`` says about the state when it never does."""
    started = time.monotonic()
    deadline = started + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout_s:.0f} s, still not: {what}\n{describe()}")
        time.sleep(POLL_INTERVAL_S)
    return time.monotonic() - started
