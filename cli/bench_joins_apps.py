"""The apps that ``streamer bench joins`` runs, one per child process::

    python -m streamer.cli.bench_joins_apps '{"framework": "quixstreams", ...}'

Two workloads, each written once per framework (inputs in
:mod:`streamer.cli.bench_joins_events`):

stream-table   orders enriched from a customers table. streamer: ``app.table("customers",
               source=customers_topic)`` and ``stream.join(customers, how="left",
               joiner=enrich).to(out)``; quixstreams, whose nearest is the as-of join with
               the table's topic as its right side: ``orders.join_asof(customers,
               how="left", on_merge=enrich).to_topic(out)``. It runs in two phases: ``load``
               (the customers topic alone, until every customer is in the table or store;
               the app then stops and saves its state) and ``join`` (the orders, against
               the loaded state): only the second is timed.
stream-stream  impressions joined with clicks of the same ad within ± 5 s. streamer:
               ``stream.join(clicks.stream(), within=5, grace=3600, joiner=pair).to(out)`` in
               an agent of one instance per partition (``concurrency=4``);
               quixstreams: ``impressions.join_interval(clicks, backward_ms=5000,
               forward_ms=5000, grace_ms=3600000, on_merge=pair).to_topic(out)``.

Both frameworks call the same ``enrich`` and ``pair``, and keep their defaults otherwise
(RocksDB state, changelogs on, commit intervals of 1 s and 5 s). As in
:mod:`streamer.cli.bench_pipeline_apps`, a child builds its app, says ``start`` and runs until
SIGTERM; streamer-embedded watches its own output and stops itself once every output is
durable, and in the load phase streamer stops itself once its table holds every customer.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.cli.bench_joins_events import (
    APP_ID,
    CLICKS_TOPIC,
    CUSTOMERS_TOPIC,
    IMPRESSIONS_TOPIC,
    ORDERS_TOPIC,
    WITHIN_MS,
)
from streamer.cli.bench_pipeline_apps import (
    JsonSettings,
    _profiled,
    _watch_embedded,
    preload,
    run_child,
    run_until_stopped,
    streamer_broker,
    tell,
)

if TYPE_CHECKING:
    from streamer import App

__all__ = ["FRAMEWORKS", "GRACE_MS", "WORKLOADS", "ChildSettings", "enrich", "main", "pair"]

FRAMEWORKS = ("streamer-embedded", "streamer-kafka", "quixstreams")
WORKLOADS = ("stream-table", "stream-stream")
# How late an event may be (streamer's grace) and how long records are kept (quixstreams'):
# an hour, longer than the input spans, so neither drops anything whatever order its
# consumer fetches the two topics in (over Kafka one topic can run a minute ahead).
GRACE_MS = 3_600_000
WATCH_INTERVAL_S = 0.005  # the load phase: how often streamer looks at its progress


@dataclass(frozen=True, slots=True)
class ChildSettings(JsonSettings):  # type: ignore[misc]  # mypy sees streamer.cli as Any
    framework: str
    workload: str
    phase: str  # "load" (stream-table's customers) or "join"
    bootstrap: str  # host:port of `streamer broker`, or the log folder for streamer-embedded
    output_topic: str
    partitions: int
    expected: int  # outputs the join phase must produce; customers the load phase reads
    state_dir: str  # the run's folder: state stores go under it (the same in both phases)
    profile_path: str | None


def enrich(order: dict[str, Any], customer: dict[str, Any] | None) -> dict[str, Any]:
    return {"order": order, "customer": customer}


def pair(impression: dict[str, Any], click: dict[str, Any] | None) -> dict[str, Any]:
    return {"impression": impression, "click": click}


# -- streamer ------------------------------------------------------------------------------


def streamer_app(broker: str, settings: ChildSettings) -> App:
    import streamer

    app = streamer.App(APP_ID, broker=broker, listen=None,
                       state_dir=os.path.join(settings.state_dir, "state"))
    partitions = settings.partitions
    out = app.topic(settings.output_topic, value_type=dict, partitions=partitions)
    if settings.workload == "stream-table":
        customers_topic = app.topic(CUSTOMERS_TOPIC, value_type=dict, partitions=partitions)
        orders = app.topic(ORDERS_TOPIC, value_type=dict, partitions=partitions)
        customers = app.table("customers", source=customers_topic)

        @app.agent(orders)
        async def enrich_orders(stream: streamer.Stream) -> None:
            await stream.join(customers, how="left", joiner=enrich).to(out)

        return app
    impressions = app.topic(IMPRESSIONS_TOPIC, value_type=dict, partitions=partitions)
    clicks = app.topic(CLICKS_TOPIC, value_type=dict, partitions=partitions)

    @app.agent(impressions, concurrency=partitions)  # one partition each: ordered by time
    async def match(stream: streamer.Stream) -> None:
        # idle_timeout_s=None: an inner join has nothing to close, and quixstreams neither
        joined = stream.join(clicks.stream(), within=WITHIN_MS / 1000, grace=GRACE_MS / 1000,
                             joiner=pair, idle_timeout_s=None)
        await joined.to(out)

    return app


def run_streamer(settings: ChildSettings) -> None:
    app = streamer_app(streamer_broker(settings), settings)
    preload("streamer.changelogs", "streamer.state", "streamer.stream_joins",
            "streamer.table_joins")
    if settings.phase == "load":
        run_until_stopped(app, settings, lambda stop: _watch_load(app, settings, stop))
        return
    embedded = settings.framework == "streamer-embedded"
    run_until_stopped(app, settings, (lambda stop: _watch_embedded(app, settings, stop))
                      if embedded else None)


async def _watch_load(app: App, settings: ChildSettings, stop: asyncio.Event) -> None:
    """Say ``loaded`` once every customer record is processed into the table, and stop
    (the final checkpoint saves the table)."""
    while app.worker is None or not app.worker.consuming:
        await asyncio.sleep(WATCH_INTERVAL_S)
    worker = app.worker
    while not stop.is_set():
        await asyncio.sleep(WATCH_INTERVAL_S)
        loaded = sum(offset for tp, offset in worker.processed_offsets().items()
                     if tp.topic == CUSTOMERS_TOPIC)
        if loaded >= settings.expected:
            tell(loaded=time.monotonic(), records=loaded)
            stop.set()


# -- quixstreams ---------------------------------------------------------------------------


def run_quixstreams(settings: ChildSettings) -> None:
    from datetime import timedelta

    from quixstreams import Application

    app = Application(
        broker_address=settings.bootstrap, consumer_group=APP_ID,
        auto_offset_reset="earliest", state_dir=os.path.join(settings.state_dir, "quix"),
        loglevel="WARNING",
    )
    out = app.topic(settings.output_topic, value_serializer="json")
    if settings.workload == "stream-table":
        customers = app.dataframe(app.topic(CUSTOMERS_TOPIC, value_deserializer="json"))
        customers = customers.update(_Counter(settings.expected))  # both phases: one topology
        orders = app.dataframe(app.topic(ORDERS_TOPIC, value_deserializer="json"))
        orders.join_asof(customers, how="left", on_merge=enrich).to_topic(out)
    else:
        impressions = app.dataframe(app.topic(IMPRESSIONS_TOPIC, value_deserializer="json"))
        clicks = app.dataframe(app.topic(CLICKS_TOPIC, value_deserializer="json"))
        within = timedelta(milliseconds=WITHIN_MS)
        impressions.join_interval(clicks, how="inner", on_merge=pair,
                                  grace_ms=timedelta(milliseconds=GRACE_MS),
                                  backward_ms=within, forward_ms=within).to_topic(out)
    tell(start=time.monotonic())
    _profiled(settings, app.run)  # stops on SIGTERM, committing its checkpoint


class _Counter:
    """quixstreams' load phase: says ``loaded`` at the last customer record."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0

    def __call__(self, value: Any) -> None:
        self.seen += 1
        if self.seen == self.expected:
            tell(loaded=time.monotonic(), records=self.seen)


# -- the child -----------------------------------------------------------------------------


RUNNERS: dict[str, Callable[[ChildSettings], None]] = {
    "streamer-embedded": run_streamer,
    "streamer-kafka": run_streamer,
    "quixstreams": run_quixstreams,
}


def main(argv: list[str]) -> None:
    run_child(argv, "streamer.cli.bench_joins_apps", ChildSettings, RUNNERS)


if __name__ == "__main__":
    main(sys.argv[1:])
