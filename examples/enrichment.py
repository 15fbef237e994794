"""Orders enriched with their customer: a stream-table join that feeds itself sample data.

Run it (nothing else needed: the log is embedded in ./streamer-data):

    streamer worker examples.enrichment:app

A task writes 20 customers to the ``enrichment-customers`` topic, keyed by customer id; the
``customers`` table is kept equal to that topic (``source=``). A timer writes orders keyed
by customer id, a few for customers that do not exist, and now and then moves a customer to
another tier. The ``enrich`` agent joins each order with its customer as the table is at
that moment (``how="left"``: an order of an unknown customer goes on with ``None``) and
sends the enriched order to ``enrichment-enriched-orders``; ``report`` reads that topic and
prints a line a second. The orders topic and the table both have 4 partitions, keyed the
same way: co-partitioned, as the worker checks at startup.
"""

from __future__ import annotations

import random
from typing import Any

import streamer

app = streamer.App("enrichment", broker="./streamer-data")
customers_topic = app.topic("enrichment-customers", value_type=dict, partitions=4)
orders = app.topic("enrichment-orders", value_type=dict, partitions=4)
enriched = app.topic("enrichment-enriched-orders", value_type=dict, partitions=4)
customers = app.table("customers", source=customers_topic)

NAMES = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Margaret",
         "Ken", "Radia", "Dennis", "Lynn", "John", "Hedy", "Tim", "Sophie", "Guido",
         "Anita", "Niklaus", "Katherine"]
TIERS = ["bronze", "silver", "gold"]
ORDERS_PER_TICK = 50
state: dict[str, Any] = {"orders": 0, "enriched": 0, "unknown": 0, "last": None}


@app.task
async def write_customers() -> None:
    for number, name in enumerate(NAMES):
        await customers_topic.send(key=f"c{number}",
                                   value={"name": name, "tier": random.choice(TIERS)})


@app.timer(0.2)
async def write_orders() -> None:
    for _ in range(ORDERS_PER_TICK):
        state["orders"] += 1
        customer = f"c{random.randrange(len(NAMES) + 2)}"  # c20 and c21 do not exist
        await orders.send(key=customer, value={"order": state["orders"], "customer": customer,
                                               "amount": round(random.uniform(5, 200), 2)})
    if random.random() < 0.1:  # a customer moves to another tier
        number = random.randrange(len(NAMES))
        await customers_topic.send(key=f"c{number}",
                                   value={"name": NAMES[number], "tier": random.choice(TIERS)})


def with_customer(order: dict[str, Any], customer: dict[str, Any] | None) -> dict[str, Any]:
    return {**order, "name": customer["name"] if customer else None,
            "tier": customer["tier"] if customer else None}


@app.agent(orders)
async def enrich(stream: streamer.Stream) -> None:
    await stream.join(customers, how="left", joiner=with_customer).to(enriched)


@app.agent(enriched)
async def count_enriched(stream: streamer.Stream) -> None:
    async for order in stream:
        state["enriched"] += 1
        state["unknown"] += order["name"] is None
        state["last"] = order


@app.timer(1.0)
async def report() -> None:
    last = state["last"]
    if last is None:
        return
    who = f"{last['name']} ({last['tier']})" if last["name"] else "an unknown customer"
    print(f"{state['enriched']:7,} orders enriched ({state['unknown']:,} of unknown "
          f"customers); last: order {last['order']}, {last['amount']:.2f} by {who}",
          flush=True)
