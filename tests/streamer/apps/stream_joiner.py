"""An outer stream-stream join of ``joiner-left`` with ``joiner-right`` (both keyed, JSON
values ``{"id": ..., "t": ms}``) into ``joiner-out``, journaling every event it joins: the
app that ``tests/faults/test_join_kill.py`` runs as
``streamer worker tests.streamer.apps.stream_joiner:app`` (and the co-partitioning test, with
a right topic of another partition count).

Each output row is ``{"left": id or null, "right": id or null}``. The agent runs one instance
per partition, so a worker with a backlog progresses in every partition at once.

Environment:

- ``JOINER_JOURNAL``: a file that gets a line ``in <id>`` per event the join takes in,
  written (one ``write``) before the event changes the join's state, and ``out <left>
  <right>`` per row, before it is sent: whatever a SIGKILL could have let out is in it;
- ``JOINER_STATE``: the folder of the join's stores (one per "machine");
- ``JOINER_PACE``: output rows a second each instance sends at most (unset: no cap);
- ``JOINER_RIGHT_PARTITIONS``: partitions of the right topic (default: as the left one);
- ``JOINER_GUARANTEE``: the app's ``processing_guarantee`` (default ``at_least_once``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import streamer

PARTITIONS = 4
WITHIN_S = 0.02
GRACE_S = 4.0  # longer than the input's event times span: no event is late, whatever order
IDLE_TIMEOUT_S = 2.0  # > any pause of a run (restore, fetch): an idle jump makes events late
PACE_PER_S = float(os.environ.get("JOINER_PACE", "0"))
PACE_STEP = 10  # rows between two pauses when paced
JOURNAL = os.environ.get("JOINER_JOURNAL")
RIGHT_PARTITIONS = int(os.environ.get("JOINER_RIGHT_PARTITIONS", PARTITIONS))

app = streamer.App("stream-joiner", commit_interval_s=0.25,
                   state_dir=os.environ.get("JOINER_STATE"),
                   processing_guarantee=os.environ.get(  # type: ignore[arg-type]
                       "JOINER_GUARANTEE", "at_least_once"))
lefts = app.topic("joiner-left", value_type=dict, partitions=PARTITIONS)
rights = app.topic("joiner-right", value_type=dict, partitions=RIGHT_PARTITIONS)
joined_out = app.topic("joiner-out", value_type=dict, partitions=PARTITIONS)


def _journaled(journal: int | None) -> Any:
    """The event time of a value, journaling its id first: the join asks for it exactly
    once per event it takes in, just before the event changes its state."""

    def event_time(value: dict[str, Any]) -> int:
        if journal is not None:
            os.write(journal, f"in {value['id']}\n".encode())
        time_ms: int = value["t"]
        return time_ms

    return event_time


def _row(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {"left": left and left["id"], "right": right and right["id"]}


@app.agent(lefts, concurrency=PARTITIONS)
async def join(stream: streamer.Stream) -> None:
    journal = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if JOURNAL else None
    event_time = _journaled(journal)
    joined = stream.join(rights.stream(), within=WITHIN_S, grace=GRACE_S, how="outer",
                         joiner=_row, timestamp=event_time, other_timestamp=event_time,
                         idle_timeout_s=IDLE_TIMEOUT_S)
    sent = 0
    async for row in joined:
        event = joined.current_event
        assert event is not None
        if journal is not None:
            os.write(journal, f"out {row['left']} {row['right']}\n".encode())
        await joined_out.send(key=event.key, value=row, timestamp=event.timestamp)
        sent += 1
        if PACE_PER_S and sent % PACE_STEP == 0:
            await asyncio.sleep(PACE_STEP / PACE_PER_S)
