"""Page views counted per page in tables, and the tables read from outside the worker.

    streamer worker examples.page_counts:app &
    printf '%s\n' '{"user": "ann", "page": "/home"}' '{"user": "bob", "page": "/home"}' \
        | streamer produce page-counts-views --broker <the worker's address>
    streamer tables list page-counts --broker ./streamer-data
    streamer tables get page-counts views /home --broker ./streamer-data        # 2
    streamer tables get page-counts last-view /home --broker ./streamer-data    # {"user": ...}

The views arrive keyed by anything (or nothing); ``group_by`` re-keys them by page, so each
page's count lives in one partition of the tables, which are kept in RocksDB beside the log
(``./streamer-data/state/page-counts``) and in the changelog topics
``page-counts-views-changelog`` and ``page-counts-last-view-changelog``. ``streamer tables
get`` reads those, so it answers as of the worker's last checkpoint (every second here).
``PAGE_COUNTS_STATE`` puts the stores elsewhere.
"""

from __future__ import annotations

import os

import streamer

PARTITIONS = 4

app = streamer.App("page-counts", broker="./streamer-data", commit_interval_s=1.0,
                   state_dir=os.environ.get("PAGE_COUNTS_STATE"))
views = app.topic("page-counts-views", value_type=dict, partitions=PARTITIONS)
view_counts = app.table("views", default=int, partitions=PARTITIONS)
last_view = app.table("last-view", partitions=PARTITIONS)


@app.agent(views)
async def count_views(stream: streamer.Stream) -> None:
    async for view in stream.group_by("page", partitions=PARTITIONS):
        view_counts[view["page"]] += 1
        last_view[view["page"]] = view
