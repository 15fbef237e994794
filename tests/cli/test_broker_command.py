"""`streamer broker` as a user runs it: starts, serves, stops cleanly on SIGTERM, keeps data."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.broker_process import BrokerProcess


async def _produce(bootstrap: str, topic: str, count: int) -> list[int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [producer.send(topic, f"m{i}".encode(), key=b"k") for i in range(count)]
        return [(await (await future)).offset for future in sent]
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        while len(values) < count:
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, f"only {len(values)} of {count} messages came back"
            values += [m.value for ms in batches.values() for m in ms if m.value is not None]
    finally:
        await consumer.stop()
    return values


def test_sigterm_stops_cleanly_and_data_survives_a_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        offsets = asyncio.run(_produce(broker.bootstrap, "events", 500))
        assert offsets == list(range(500))
        assert broker.stop() == 0
        assert any("stopped" in line for line in broker.output)
        broker = broker.restart()
        values = asyncio.run(_consume(broker.bootstrap, "events", 500))
        assert values == [f"m{i}".encode() for i in range(500)]
    finally:
        broker.kill()


def test_bad_listen_address_is_a_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", "broker", "--listen", "127.0.0.1:99999"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = BrokerProcess(tmp_path / "a").start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "streamer.cli.main", "broker", "--data", str(tmp_path / "b"),
             "--listen", first.bootstrap],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode != 0
        assert "Traceback" not in result.stderr + result.stdout
        assert "address already in use" in (result.stderr + result.stdout).lower()
    finally:
        first.kill()
