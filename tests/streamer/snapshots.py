"""Reading the worker snapshots in ``__streamer_workers`` back, as ``streamer top`` does."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from streamer.statistics import WorkerSnapshot
from streamer.statistics_log import SnapshotReader


async def read_snapshots(bootstrap: str) -> dict[str, WorkerSnapshot]:
    """Each worker's last snapshot, from the broker (or served log) at ``bootstrap``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await SnapshotReader(consumer).read()
    finally:
        await consumer.stop()
