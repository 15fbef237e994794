"""Counts keyed events into a RocksDB table and journals every event it processes: the app
that ``tests/faults/test_table_kill.py`` runs as
``streamer worker tests.streamer.apps.table_counter:app``.

The agent runs one instance per partition, so a worker with a backlog makes progress in
every partition at once (one instance walks its inbox's batches in order: it would finish
one partition's backlog before it starts the next), and a kill lands mid-way in all of them.

Environment:

- ``TABLE_COUNTER_JOURNAL``: a file that gets the line ``partition offset key`` for each
  event processed, written (one ``write``) *before* the count changes, so an event whose
  count a SIGKILL could have let reach the changelog is always in the journal;
- ``TABLE_COUNTER_STATE``: the folder of the table's stores (one per "machine");
- ``TABLE_COUNTER_PACE``: events a second each instance (partition) processes at most
  (unset: no cap).
"""

from __future__ import annotations

import asyncio
import os

import streamer

PARTITIONS = 4
PACE_PER_S = float(os.environ.get("TABLE_COUNTER_PACE", "0"))
PACE_STEP = 10  # events between two pauses when paced
JOURNAL = os.environ.get("TABLE_COUNTER_JOURNAL")

app = streamer.App("table-counter", commit_interval_s=0.25,
                   state_dir=os.environ.get("TABLE_COUNTER_STATE"))
events = app.topic("table-counter-events", value_type=str, partitions=PARTITIONS)
counts = app.table("counts", default=int, partitions=PARTITIONS, store="rocksdb")


@app.agent(events, concurrency=PARTITIONS)
async def count(stream: streamer.Stream) -> None:
    journal = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if JOURNAL else None
    processed = 0
    async for key in stream:
        event = stream.current_event
        assert event is not None
        if journal is not None:
            os.write(journal, f"{event.partition} {event.offset} {key}\n".encode())
        counts[key] += 1  # no await since the journal line: no checkpoint in between
        processed += 1
        if PACE_PER_S and processed % PACE_STEP == 0:
            await asyncio.sleep(PACE_STEP / PACE_PER_S)
