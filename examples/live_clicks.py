"""A self-feeding app: a timer generates page views, agents filter, re-key and count them.

Run it (nothing else needed: the log is embedded in ./streamer-data):

    streamer worker examples.live_clicks:app

Every second it prints the views per second and the busiest users so far. Stop it with
Ctrl-C; it commits before it exits, and a restart goes on from there. While it runs, the
log is served on loopback: `streamer topics list --broker <address in the log line>`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass

import streamer

app = streamer.App("live-clicks", broker="./streamer-data")


@dataclass
class PageView:
    user: str
    page: str
    duration_ms: int


views = app.topic("views", value_type=PageView, partitions=4)
long_views = app.topic("long-views", value_type=PageView, partitions=4)

USERS = [f"user-{n}" for n in range(50)]
PAGES = ["/", "/pricing", "/docs", "/blog", "/signup"]
VIEWS_PER_TICK = 500
seen_per_user: Counter[str] = Counter()
stats = {"views": 0, "long": 0, "since": time.monotonic()}


@app.timer(0.1)
async def generate_views() -> None:
    for _ in range(VIEWS_PER_TICK):
        view = PageView(random.choice(USERS), random.choice(PAGES), random.randint(10, 5000))
        await views.send(key=view.user, value=view)


@app.agent(views)
async def keep_long_views(stream: streamer.Stream) -> None:
    async for view in stream:
        stats["views"] += 1
        if view.duration_ms > 1000:
            await long_views.send(key=view.page, value=view)


@app.agent(long_views)
async def count_by_user(stream: streamer.Stream) -> None:
    async for view in stream.group_by("user"):
        seen_per_user[view.user] += 1
        stats["long"] += 1


@app.timer(1.0)
async def report() -> None:
    elapsed = time.monotonic() - stats["since"]
    top = ", ".join(f"{user} {count}" for user, count in seen_per_user.most_common(3))
    print(f"{stats['views'] / elapsed:8,.0f} views/s  {stats['long']:8,} long views  top: {top}",
          flush=True)
    stats.update(views=0, since=time.monotonic())
