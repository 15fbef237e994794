"""Page views in, popular pages out: filter, group_by and a per-page count.

    streamer worker examples.pageviews:app &
    printf '%s\n' '{"user": "ann", "page": "/", "duration_ms": 1500}' \
        | streamer produce pageviews-views --broker <the worker's address>
    streamer consume pageviews-popular --from-beginning --broker <the worker's address>
"""

from __future__ import annotations

from collections import Counter

import streamer

app = streamer.App("pageviews", broker="./streamer-data")
views = app.topic("pageviews-views", value_type=dict, partitions=4)
popular = app.topic("pageviews-popular", value_type=dict)
POPULAR_AFTER = 3
counts: Counter[str] = Counter()


@app.agent(views, on_error="dead_letter")
async def find_popular(stream: streamer.Stream) -> None:
    long_views = stream.filter(lambda view: view["duration_ms"] > 1000)
    async for view in long_views.group_by("page"):
        counts[view["page"]] += 1
        if counts[view["page"]] == POPULAR_AFTER:
            await popular.send(key=view["page"], value={"page": view["page"],
                                                        "views": POPULAR_AFTER})
