"""One consumer-group member in a process of its own, for any of the three clients.

Run as ``python -m tests.compat.member CLIENT BOOTSTRAP TOPIC GROUP ASSIGNOR
SESSION_TIMEOUT_MS``. The member subscribes to TOPIC in GROUP and reports on stdout, one
JSON object a line:

- ``{"assignment": [partitions]}`` whenever the partitions it owns change;
- ``{"records": [[partition, offset, value], ...]}`` for every batch it consumed (values
  are the test's UTF-8 strings), reported before the batch's offsets are committed;
- ``{"closed": true}`` once it has left the group on SIGTERM.

SIGTERM closes the consumer cleanly (it leaves the group); SIGKILL lets it die, so the
group only learns of it when its session times out. Commits are synchronous after every
batch; a commit that fails in a rebalance is ignored (its records come again: at least
once).

The parent side is :class:`MemberProcess`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["MemberProcess"]

HEARTBEAT_INTERVAL_MS = 500
REBALANCE_TIMEOUT_MS = 20_000  # max.poll.interval.ms: how long a rejoin may take
POLL_TIMEOUT_MS = 200
KAFKA_PYTHON_POLL_TIMEOUT_MS = 1000
CLOSE_TIMEOUT_S = 30.0
_REPO = Path(__file__).resolve().parents[2]


# -- the member (child process) ----------------------------------------------------------


class _Reporter:
    def __init__(self) -> None:
        self.assignment: list[int] | None = None
        self.stopping = False

    def emit(self, **event: Any) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    def owned(self, partitions: list[int]) -> None:
        partitions = sorted(partitions)
        if partitions != self.assignment:
            self.assignment = partitions
            self.emit(assignment=partitions)

    def stop(self, *_: Any) -> None:
        self.stopping = True


def _run_aiokafka(reporter: _Reporter, args: list[str]) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    from aiokafka.errors import KafkaError

    bootstrap, topic, group, assignor, session_timeout_ms = args
    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                 "sticky": StickyPartitionAssignor}

    async def main() -> None:
        signal.signal(signal.SIGTERM, reporter.stop)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(session_timeout_ms),
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=REBALANCE_TIMEOUT_MS,
            rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            partition_assignment_strategy=(assignors[assignor],),
        )
        await consumer.start()
        while not reporter.stopping:
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            reporter.owned([tp.partition for tp in consumer.assignment()])
            records = [[r.partition, r.offset, r.value.decode()]
                       for rs in batches.values() for r in rs]
            if records:
                reporter.emit(records=records)
                with contextlib.suppress(KafkaError):  # rebalancing: these come again
                    await consumer.commit()
        await consumer.stop()

    asyncio.run(main())


def _run_kafka_python(reporter: _Reporter, args: list[str]) -> None:
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
    from kafka.errors import KafkaError

    bootstrap, topic, group, assignor, session_timeout_ms = args
    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor,
                 "sticky": StickyPartitionAssignor,
                 "cooperative-sticky": CooperativeStickyAssignor}
    signal.signal(signal.SIGTERM, reporter.stop)
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", session_timeout_ms=int(session_timeout_ms),
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, max_poll_interval_ms=REBALANCE_TIMEOUT_MS,
        partition_assignment_strategy=(assignors[assignor],),
    )
    while not reporter.stopping:
        # Longer than a join phase: kafka-python 3.0.12 drops a join answer that comes
        # after the poll() that started it timed out (see tests/compat/test_kafka_python.py).
        batches = consumer.poll(timeout_ms=KAFKA_PYTHON_POLL_TIMEOUT_MS)
        reporter.owned([tp.partition for tp in consumer.assignment()])
        records = [[r.partition, r.offset, r.value.decode()] for rs in batches.values() for r in rs]
        if records:
            reporter.emit(records=records)
            with contextlib.suppress(KafkaError):
                consumer.commit()
    consumer.close()


def _run_confluent(reporter: _Reporter, args: list[str]) -> None:
    from confluent_kafka import Consumer, KafkaException

    bootstrap, topic, group, assignor, session_timeout_ms = args
    signal.signal(signal.SIGTERM, reporter.stop)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": int(session_timeout_ms),
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "max.poll.interval.ms": REBALANCE_TIMEOUT_MS,
        "partition.assignment.strategy": assignor,
    })
    consumer.subscribe([topic])
    while not reporter.stopping:
        messages = consumer.consume(num_messages=500, timeout=POLL_TIMEOUT_MS / 1000)
        reporter.owned([tp.partition for tp in consumer.assignment()])
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        records = [[m.partition(), m.offset(), m.value().decode()] for m in messages]
        if records:
            reporter.emit(records=records)
            with contextlib.suppress(KafkaException):
                consumer.commit(asynchronous=False)
    consumer.close()


_CLIENTS = {"aiokafka": _run_aiokafka, "kafka-python": _run_kafka_python,
            "confluent": _run_confluent}


def _member_main(argv: list[str]) -> None:
    client, *args = argv
    reporter = _Reporter()
    _CLIENTS[client](reporter, args)
    reporter.emit(closed=True)


# -- the test's side ---------------------------------------------------------------------


class MemberProcess:
    """A member started by a test: what it owns now, and every record it consumed."""

    def __init__(
        self, name: str, client: str, bootstrap: str, topic: str, group: str, assignor: str,
        session_timeout_ms: int, log_folder: Path,
    ) -> None:
        self.name = name
        self.assignment: frozenset[int] | None = None
        self.records: list[tuple[int, int, str]] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self.stderr_path = log_folder / f"{name}.stderr"
        command = [sys.executable, "-m", "tests.compat.member", client, bootstrap, topic,
                   group, assignor, str(session_timeout_ms)]
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=_REPO,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = json.loads(line)
            with self._lock:
                if "assignment" in event:
                    self.assignment = frozenset(event["assignment"])
                if "records" in event:
                    self.records.extend(tuple(r) for r in event["records"])
                if event.get("closed"):
                    self.closed.set()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def values(self) -> list[str]:
        with self._lock:
            return [value for _, _, value in self.records]

    def leave(self) -> None:
        """SIGTERM: close the consumer, which leaves the group; wait for the process."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(CLOSE_TIMEOUT_S)
        self._reader.join(CLOSE_TIMEOUT_S)
        assert self.closed.is_set(), f"{self.name} did not close cleanly:\n{self.stderr()}"

    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, no more heartbeats."""
        if self.alive:
            self.process.kill()
        self.process.wait()

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-3000:]

    def describe(self) -> str:
        state = "running" if self.alive else f"exited {self.process.returncode}"
        owned = sorted(self.assignment) if self.assignment is not None else None
        return f"{self.name} ({state}) owns {owned}, consumed {len(self.records)}\n{self.stderr()}"


if __name__ == "__main__":
    _member_main(sys.argv[1:])
