"""An app whose agent fails on its first event (``on_error="raise"``): ``streamer worker``
must exit non-zero with one line naming the topic, partition and offset."""

from __future__ import annotations

import streamer

app = streamer.App("failing", commit_interval_s=0.2)
orders = app.topic("failing-orders", value_type=dict, partitions=1)


@app.agent(orders)
async def total(stream: streamer.Stream) -> None:
    async for order in stream:
        print(order["price"] * order["quantity"])


@app.task
async def feed() -> None:
    await orders.send(key="o-1", value={"price": 3})
