"""Copies every event of ``copier-in`` to ``copier-out`` (same key and value), logging its
progress: the app that worker-process tests run as
``streamer worker tests.streamer.apps.copier:app``.

Environment: ``COPIER_PACE`` caps the events copied a second by one worker (unset: no cap);
``COPIER_PROGRESS_EVERY`` is how often a "copied N events" line is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import streamer

PARTITIONS = 8
PACE_PER_S = float(os.environ.get("COPIER_PACE", "0"))
PROGRESS_EVERY = int(os.environ.get("COPIER_PROGRESS_EVERY", "1000"))
PACE_STEP = 10  # events between two pauses when paced

logger = logging.getLogger("copier")

app = streamer.App("copier", commit_interval_s=0.5)
inputs = app.topic("copier-in", partitions=PARTITIONS)
outputs = app.topic("copier-out", partitions=PARTITIONS)
copied = 0


@app.agent(inputs, sink=[outputs])
async def copy(stream: streamer.Stream) -> AsyncIterator[bytes]:
    global copied
    async for value in stream:
        yield value
        copied += 1
        if copied % PROGRESS_EVERY == 0:
            logger.info("copied %d events", copied)
        if PACE_PER_S and copied % PACE_STEP == 0:
            await asyncio.sleep(PACE_STEP / PACE_PER_S)
