"""SIGKILL ``streamer broker`` while confluent-kafka produces with ``acks=all``; after a
restart on the same data folder, every acknowledged message is there.

The producer (librdkafka, in this process) sends numbered messages round-robin over a few
partitions of a topic with small segments (so kills also land in segment rolls) and keeps
each successful delivery report's partition and offset. The broker is killed at random
moments mid-stream, several times, and restarted on the same port and folder while the
producer keeps going: librdkafka reconnects and retries what was in flight. At the end:

- every acknowledged message is readable at its acknowledged offset;
- each partition's offsets are contiguous from 0;
- every message was delivered in the end (librdkafka retries until its message timeout);
  without idempotence a retried batch may be in the log twice, which is allowed.

With ``enable.idempotence`` the broker must also have recovered each producer's sequence
numbers from the log, so that a retry of a batch that was written before the kill is
answered as a duplicate: every message is in the log exactly once, in the order sent.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.broker_process import BrokerProcess

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "acked"
PARTITIONS = 3
SEGMENT_BYTES = 64 * 1024
KILLS = 4
PRODUCE_BEFORE_KILL_S = (0.2, 1.0)  # a random while of producing before each kill
PRODUCE_WHILE_DOWN_S = (0.0, 0.3)  # and a random while before the restart
MESSAGES_PER_S = 4000
QUEUE_WAIT_S = 0.05
FLUSH_TIMEOUT_S = 60.0
SERVING_TIMEOUT_S = 30.0
BROKER_LOG_TAIL_LINES = 15
VALUE_PADDING = b"." * 100
# librdkafka's complaints while the broker is down go to pytest's log capture, not stderr.
CLIENT_LOGGER = logging.getLogger("tests.faults.broker_kill.librdkafka")


class _Producer:
    """Numbered messages, message ``n`` to partition ``n % PARTITIONS``, and what the
    delivery reports said about each."""

    def __init__(self, bootstrap: str, *, idempotent: bool) -> None:
        self.acked: dict[int, tuple[int, int]] = {}  # message number -> partition, offset
        self.failed: dict[int, str] = {}
        self.fatal: list[str] = []
        self.sent = 0
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": idempotent,
            "linger.ms": 2,
            "message.timeout.ms": 60_000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 200,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "error_cb": self._on_error,
            "logger": CLIENT_LOGGER,
        })

    def _on_error(self, error: object) -> None:
        assert isinstance(error, confluent_kafka.KafkaError)
        if error.fatal():
            self.fatal.append(str(error))

    def _on_delivery(self, error: object, message: object) -> None:
        assert isinstance(message, confluent_kafka.Message)
        number = int(message.key())
        if error is not None:
            self.failed[number] = str(error)
        else:
            self.acked[number] = (message.partition(), message.offset())

    def produce_for(self, seconds: float) -> None:
        """Send at about ``MESSAGES_PER_S`` for ``seconds``."""
        start = time.monotonic()
        first = self.sent
        while (elapsed := time.monotonic() - start) < seconds:
            while self.sent - first < int(elapsed * MESSAGES_PER_S):
                self._produce_one()
            self.producer.poll(0.001)

    def produce_until_acknowledged(self) -> None:
        """Send until the broker acknowledges something new: it is up and serving."""
        acked_before = len(self.acked)
        deadline = time.monotonic() + SERVING_TIMEOUT_S
        while len(self.acked) == acked_before:
            assert time.monotonic() < deadline, "the broker acknowledged nothing"
            assert not self.fatal, self.fatal
            self.produce_for(0.05)

    def _produce_one(self) -> None:
        number = self.sent
        while True:
            try:
                self.producer.produce(
                    TOPIC, key=str(number).encode(), value=VALUE_PADDING,
                    partition=number % PARTITIONS, on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # the local queue is full while the broker is down
                self.producer.poll(QUEUE_WAIT_S)
        self.sent += 1


def _create_topic(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1,
                     config={"segment.bytes": str(SEGMENT_BYTES)})
    admin.create_topics([topic])[TOPIC].result(timeout=15)


def _read_log(bootstrap: str) -> dict[int, list[tuple[int, int]]]:
    """Each partition's (offset, message number) pairs, from offset 0 to the end."""
    from confluent_kafka import TopicPartition

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": "kill-checker", "enable.auto.commit": False,
        "logger": CLIENT_LOGGER,
    })
    try:
        stored: dict[int, list[tuple[int, int]]] = {}
        for partition in range(PARTITIONS):
            tp = TopicPartition(TOPIC, partition, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            assert low == 0, f"partition {partition} starts at {low}"
            consumer.assign([tp])
            records: list[tuple[int, int]] = []
            deadline = time.monotonic() + 30
            while len(records) < high:
                assert time.monotonic() < deadline, f"partition {partition}: read {len(records)}"
                message = consumer.poll(0.5)
                if message is None:
                    continue
                assert message.error() is None, message.error()
                records.append((message.offset(), int(message.key())))
            stored[partition] = records
        return stored
    finally:
        consumer.close()


@contextmanager
def _restarts() -> Iterator[list[BrokerProcess]]:
    """Collects the brokers started after kills (the fixture kills only the first one)
    and kills them on the way out."""
    started: list[BrokerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()


def _diagnostics(producer: _Producer, brokers: list[BrokerProcess]) -> str:
    errors = collections.Counter(producer.failed.values())
    lines = [f"sent {producer.sent}, acknowledged {len(producer.acked)}, "
             f"failed {len(producer.failed)} {dict(errors)}, fatal {producer.fatal}"]
    for index, process in enumerate(brokers):
        lines.append(f"--- broker run {index}, last {BROKER_LOG_TAIL_LINES} lines ---")
        lines.append("".join(process.output[-BROKER_LOG_TAIL_LINES:]))
    return "\n".join(lines)


@pytest.mark.parametrize("idempotent", [False, True], ids=["acks-all", "idempotent"])
def test_acknowledged_messages_survive_sigkill(broker: BrokerProcess, idempotent: bool) -> None:
    rng = random.Random()
    _create_topic(broker.bootstrap)
    producer = _Producer(broker.bootstrap, idempotent=idempotent)
    with _restarts() as started:
        brokers = [broker]
        for _ in range(KILLS):
            producer.produce_until_acknowledged()
            producer.produce_for(rng.uniform(*PRODUCE_BEFORE_KILL_S))
            brokers[-1].kill()
            producer.produce_for(rng.uniform(*PRODUCE_WHILE_DOWN_S))
            started.append(brokers[-1].restart())
            brokers.append(started[-1])
        producer.produce_for(rng.uniform(*PRODUCE_BEFORE_KILL_S))
        assert producer.producer.flush(FLUSH_TIMEOUT_S) == 0, (
            "messages still undelivered\n" + _diagnostics(producer, brokers)
        )
        stored = _read_log(brokers[-1].bootstrap)

    problems = []
    at_offset = {(p, offset): number for p, records in stored.items() for offset, number in records}
    lost = {number: place for number, place in producer.acked.items()
            if at_offset.get(place) != number}
    if lost:
        problems.append(f"{len(lost)} acknowledged messages not at their offsets: " + ", ".join(
            f"#{n} at {p}:{o} (found {at_offset.get((p, o))})"
            for n, (p, o) in list(lost.items())[:10]
        ))
    for partition, records in stored.items():
        if [offset for offset, _ in records] != list(range(len(records))):
            problems.append(f"partition {partition}: offsets are not contiguous from 0")
        numbers = [number for _, number in records]
        if idempotent and numbers != list(range(partition, producer.sent, PARTITIONS)):
            problems.append(f"partition {partition}: duplicates, gaps or reordering")
    if producer.fatal or producer.failed or len(producer.acked) != producer.sent:
        problems.append("not every message was acknowledged")
    assert not problems, "\n".join(problems) + "\n" + _diagnostics(producer, brokers)
