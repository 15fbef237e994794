"""An exactly-once keyed count: the app that ``tests/faults/test_exactly_once_kill.py`` runs
as ``streamer worker tests.streamer.apps.eos_counter:app`` and SIGKILLs.

For every event (a key) it adds one to the key's count in a RocksDB table and sends
``"<key> <count>"`` to :data:`OUTPUT`, keyed by the key. Exactly once, the output read with
``read_committed`` holds for each key the counts 1, 2, ... n once each, and the table's
changelog the key's n, however often the worker was killed.

Environment: ``EOS_COUNTER_STATE``, the folder of the table's stores (its state slot also
keeps the worker's transactional id); ``EOS_COUNTER_PACE``, events a second each partition
processes at most (unset: no cap), so a kill lands mid-stream.
"""

from __future__ import annotations

import asyncio
import os

import streamer

PARTITIONS = 4
INPUT = "eos-counter-events"
OUTPUT = "eos-counter-counts"
PACE_PER_S = float(os.environ.get("EOS_COUNTER_PACE", "0"))
PACE_STEP = 50  # events between two pauses when paced

app = streamer.App("eos-counter", commit_interval_s=0.2, processing_guarantee="exactly_once",
                   state_dir=os.environ.get("EOS_COUNTER_STATE"))
events = app.topic(INPUT, value_type=str, partitions=PARTITIONS)
out = app.topic(OUTPUT, value_type=str, partitions=PARTITIONS)
counts = app.table("counts", default=int, partitions=PARTITIONS, store="rocksdb")


@app.agent(events, concurrency=PARTITIONS)
async def count(stream: streamer.Stream) -> None:
    processed = 0
    async for key in stream:
        n = counts[key] + 1
        counts[key] = n
        await out.send(key=key, value=f"{key} {n}")
        processed += 1
        if PACE_PER_S and processed % PACE_STEP == 0:
            await asyncio.sleep(PACE_STEP / PACE_PER_S)
