"""Prometheus metrics of a worker, rendered from its latest snapshot.

``streamer worker MODULE:APP --metrics-port 9100`` serves ``/metrics`` (prometheus-client's
HTTP server, in a thread of its own) with one collector over the snapshot the worker's
statistics publisher took last (``worker.activity.latest``, at most a second old): the same
numbers as ``streamer top`` and ``__streamer_workers``, no counters of their own. A scrape
reads one immutable snapshot, so it never races the event loop.

Needs the ``metrics`` extra: ``pip install 'streamer[metrics]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import StreamerError
from .statistics import WorkerSnapshot

if TYPE_CHECKING:
    from .app import App

__all__ = ["MetricsUnavailableError", "SnapshotCollector", "metric_families", "serve_metrics"]

QUANTILES = (("0.5", "processing_ms_p50"), ("0.99", "processing_ms_p99"))


class MetricsUnavailableError(StreamerError):
    """``--metrics-port`` without prometheus-client installed."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailableError(
            "--metrics-port needs prometheus-client: pip install 'streamer[metrics]'"
        ) from None
    return prometheus_client


def metric_families(snap: WorkerSnapshot) -> list[Any]:
    """The snapshot as Prometheus metric families (``app`` and ``worker`` label them all)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    base = ("app", "worker")
    ids = (snap.app, snap.worker)
    families: list[Any] = []

    def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        family = GaugeMetricFamily(name, text, labels=[*base, *labels])
        families.append(family)
        return family

    def counter(name: str, text: str, labels: tuple[str, ...] = ()) -> Any:
        family = CounterMetricFamily(name, text, labels=[*base, *labels])
        families.append(family)
        return family

    gauge("streamer_worker_info", "1, labelled with the worker's state and host",
          ("state", "host")).add_metric([*ids, snap.state, snap.host], 1)
    gauge("streamer_worker_uptime_seconds", "Seconds since the worker started").add_metric(
        ids, snap.uptime_s)
    gauge("streamer_worker_generation", "The consumer group's generation").add_metric(
        ids, snap.generation)
    gauge("streamer_worker_leader", "1 if this worker runs the app's leader timers").add_metric(
        ids, int(snap.leader))
    counter("streamer_worker_rebalances", "Assignments received").add_metric(
        ids, snap.rebalances)
    counter("streamer_worker_events", "Events fetched and handed to agents").add_metric(
        ids, snap.events_in)
    counter("streamer_worker_commits", "Offset commits").add_metric(ids, snap.commits)
    gauge("streamer_worker_events_per_second", "Events in per second").add_metric(
        ids, snap.rate)
    if snap.guarantee == "exactly_once":
        counter("streamer_worker_transactions", "Transactions committed").add_metric(
            ids, snap.transactions)
        counter("streamer_worker_transactions_aborted", "Transactions aborted").add_metric(
            ids, snap.aborted_transactions)
    _partitions(snap, gauge)
    _agents(snap, gauge, counter)
    _tables(snap, gauge)
    _joins(snap, gauge, counter)
    return families


def _partitions(snap: WorkerSnapshot, gauge: Callable[..., Any]) -> None:
    labels = ("topic", "partition")
    series = {
        "committed_offset": gauge("streamer_partition_committed_offset",
                                  "The last offset committed", labels),
        "processed_offset": gauge("streamer_partition_processed_offset",
                                  "The offset below which every event is processed", labels),
        "end_offset": gauge("streamer_partition_end_offset", "The high watermark", labels),
        "lag": gauge("streamer_partition_lag", "End offset minus processed offset", labels),
        "rate": gauge("streamer_partition_events_per_second", "Events processed per second",
                      labels),
    }
    for p in snap.partitions:
        key = [snap.app, snap.worker, p.topic, str(p.partition)]
        for field, family in series.items():
            value = getattr(p, field)
            if value is not None:
                family.add_metric(key, value)


def _agents(snap: WorkerSnapshot, gauge: Callable[..., Any],
            counter: Callable[..., Any]) -> None:
    labels = ("agent",)
    events_in = counter("streamer_agent_events_in", "Events handed to the agent", labels)
    events_out = counter("streamer_agent_events_out", "Values the agent yielded", labels)
    errors = counter("streamer_agent_errors", "Errors the agent raised", labels)
    rate = gauge("streamer_agent_events_per_second", "Events in per second", labels)
    seconds = gauge("streamer_agent_processing_seconds",
                    "Per-event processing time over the last batches (measured per batch)",
                    (*labels, "quantile"))
    for agent in snap.agents:
        key = [snap.app, snap.worker, agent.name]
        events_in.add_metric(key, agent.events_in)
        events_out.add_metric(key, agent.events_out)
        errors.add_metric(key, agent.errors)
        rate.add_metric(key, agent.rate)
        for quantile, field in QUANTILES:
            value = getattr(agent, field)
            if value is not None:
                seconds.add_metric([*key, quantile], value / 1000)


def _tables(snap: WorkerSnapshot, gauge: Callable[..., Any]) -> None:
    labels = ("table", "partition")
    keys = gauge("streamer_table_keys", "Keys in the table's partition", labels)
    size = gauge("streamer_table_bytes_on_disk", "Bytes of the partition's store", labels)
    lag = gauge("streamer_table_changelog_lag", "Changelog records not in the store", labels)
    recovering = gauge("streamer_table_recovering", "1 while the partition recovers", labels)
    for table in snap.tables:
        for p in table.partitions:
            key = [snap.app, snap.worker, table.name, str(p.partition)]
            recovering.add_metric(key, int(p.recovering))
            for family, value in ((keys, p.keys), (size, p.bytes_on_disk),
                                  (lag, p.changelog_lag)):
                if value is not None:
                    family.add_metric(key, value)


def _joins(snap: WorkerSnapshot, gauge: Callable[..., Any],
           counter: Callable[..., Any]) -> None:
    labels = ("join", "kind")
    events = counter("streamer_join_events", "Events a stream join took in", labels)
    held = gauge("streamer_join_buffered_events",
                 "Events a stream join holds in open windows (as-of: right values)", labels)
    late = counter("streamer_join_late_events", "Events dropped: their window had closed",
                   labels)
    rows = gauge("streamer_join_rows",
                 "Rows out of a stream join; rows of a table join's joined table", labels)
    for join in snap.joins:
        key = [snap.app, snap.worker, join.name, join.kind]
        if join.kind not in ("table", "foreign key"):
            events.add_metric(key, join.events)
        if join.kind in ("window", "interval", "as-of"):
            held.add_metric(key, join.buffered)
            late.add_metric(key, join.late_events)
        rows.add_metric(key, join.rows)


class SnapshotCollector:
    """A prometheus-client collector over ``latest()``, the worker's last snapshot."""

    def __init__(self, latest: Callable[[], WorkerSnapshot | None]) -> None:
        self.latest = latest

    def collect(self) -> Iterator[Any]:
        snap = self.latest()
        if snap is not None:
            yield from metric_families(snap)


def serve_metrics(app: App, port: int, host: str = "0.0.0.0") -> Any:
    """Serve ``app``'s running worker's metrics on ``host:port``; returns the server (its
    ``shutdown()`` stops it). Raises :class:`MetricsUnavailableError` without
    prometheus-client, ``OSError`` if the port is taken."""
    prometheus = _prometheus()

    def latest() -> WorkerSnapshot | None:
        worker = app.worker
        return None if worker is None else worker.activity.latest

    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(latest))
    server, _thread = prometheus.start_http_server(port, addr=host, registry=registry)
    return server
