"""A stream-table join whose inputs are not co-partitioned (orders have 3 partitions, the
customers table 2): ``streamer worker`` must stop at startup with the CopartitionError, before
any event, and exit 1."""

from __future__ import annotations

import streamer

app = streamer.App("mismatched-join", commit_interval_s=0.2)
orders = app.topic("mismatched-orders", value_type=dict, partitions=3)
customers_topic = app.topic("mismatched-customers", value_type=dict, partitions=2)
customers = app.table("customers", source=customers_topic)


@app.agent(orders)
async def enrich(stream: streamer.Stream) -> None:
    async for order, customer in stream.join(customers, how="left"):
        print(order, customer)
