"""Fabricated snapshots and frames for ``streamer top``'s render tests: a fixed clock, two
workers of one app, partitions with and without lag, agents with errors, two tables (one
recovering), folded errors; the same workers exactly once with joins; and a log without
workers."""

from __future__ import annotations

import dataclasses

from streamer.cli.top_view import TopFrame, build_frame

from streamer.statistics import (
    AgentSnapshot,
    EventSnapshot,
    GroupOffsetSnapshot,
    GroupSnapshot,
    JoinSnapshot,
    LogPartitionSnapshot,
    LogSnapshot,
    PartitionSnapshot,
    TablePartitionSnapshot,
    TableSnapshot,
    WorkerSnapshot,
)

__all__ = ["NOW_MS", "joins_frame", "overview_frame", "worker_frame", "worker_snapshot"]

NOW_MS = 1_780_000_000_000  # a fixed wall clock: 2026-05-28 20:26:40 UTC
APP = "orders-app"
ONE = f"{APP}@host-a:4101"
TWO = f"{APP}@host-b:4102"


def _rates(peak: float, shape: str) -> tuple[float, ...]:
    levels = {"rising": "1233445678889", "falling": "9877654433221", "flat": "5555555555555",
              "idle": "0000000000000", "bursty": "1919191919191"}[shape]
    return tuple(round(peak * int(c) / 9, 1) for c in levels)


def _partition(worker: str, topic: str, number: int, committed: int, end: int, rate: float,
               shape: str) -> PartitionSnapshot:
    processed = min(committed + int(rate / 2), end)
    return PartitionSnapshot(topic, number, worker, committed, processed, end, end - processed,
                             rate, _rates(rate, shape))


def worker_snapshot(worker: str = ONE, *, at_ms: int = NOW_MS, state: str = "running",
                    second: bool = False) -> WorkerSnapshot:
    app = worker.partition("@")[0]
    if not second:
        partitions = (
            _partition(worker, "orders", 0, 10_500, 10_510, 210.0, "rising"),
            _partition(worker, "orders", 1, 8_000, 12_400, 35.0, "falling"),
            _partition(worker, "orders", 2, 20_100, 20_100, 0.0, "idle"),
            _partition(worker, "payments", 0, 4_000, 4_000, 0.0, "idle"),
            _partition(worker, "orders-app-by_sku-repartition", 0, 1_203_345, 1_250_000,
                       1_530.5, "bursty"),
        )
        agents = (
            AgentSnapshot("process_order", "orders", 2, 120_511, 120_400, 0, 245.0, 0.021,
                          4.2),
            AgentSnapshot("enrich", "orders-app-by_sku-repartition", 1, 9_001, 8_984, 17,
                          1_530.5, 0.35, 88.0),
        )
        tables = (TableSnapshot("order_totals", (
            TablePartitionSnapshot(0, 20_100, 4_900_000, 33_000, 33_000, False, None, None),
            TablePartitionSnapshot(1, 20_112, 5_100_000, 31_880, 32_000, False, None, None),
        )),)
        events = (
            EventSnapshot(NOW_MS - 65_000, "rebalance", "worker", "assigned orders[0-2] "
                          "payments[0] orders-app-by_sku-repartition[0]"),
            EventSnapshot(NOW_MS - 3_000, "error", "enrich", "KeyError: 'sku'",
                          "orders-app-by_sku-repartition[0] offset 1203340", 17),
        )
    else:
        partitions = (
            _partition(worker, "orders", 3, 7_700, 7_702, 60.0, "flat"),
            _partition(worker, "payments", 1, 3_990, 4_410, 12.0, "rising"),
        )
        agents = (AgentSnapshot("process_order", "orders", 2, 30_002, 30_002, 0, 60.0, 0.018,
                                6.0),)
        tables = (TableSnapshot("order_totals", (
            TablePartitionSnapshot(3, 100, 30_000, 2_000, 19_000, True, 4_200, 17_000),
        )),)
        events = (
            EventSnapshot(NOW_MS - 64_000, "rebalance", "worker", "assigned orders[3] "
                          "payments[1]"),
            EventSnapshot(NOW_MS - 2_000, "state", "worker", "recovering → running"),
        )
    rate = sum(p.rate for p in partitions)
    return WorkerSnapshot(
        app=app, worker=worker, host=worker.split("@")[1].split(":")[0],
        pid=int(worker.rsplit(":", 1)[1]), state=state, generation=7, rebalances=3,
        leader=not second, started_at_ms=NOW_MS - 3_725_000, at_ms=at_ms, uptime_s=3725.0,
        events_in=150_000, commits=3_700, rate=rate, rate_history=_rates(rate, "rising"),
        broker="./orders-data", address="127.0.0.1:40123", partitions=partitions,
        agents=agents, tables=tables, events=events, log=_log(),
    )


def _log() -> LogSnapshot:
    return LogSnapshot(
        (
            LogPartitionSnapshot("orders", 0, 0, 10_510, 1_200_000),
            LogPartitionSnapshot("orders", 1, 0, 12_400, 1_400_000),
            LogPartitionSnapshot("payments", 0, 100, 4_000, 400_000),
            LogPartitionSnapshot("__streamer_workers", 0, 0, 9_100, 23_000_000),
        ),
        (
            GroupSnapshot("orders-app", "Stable", 2, (
                GroupOffsetSnapshot("orders", 0, 10_500, 10),
                GroupOffsetSnapshot("orders", 1, 8_000, 4_400),
                GroupOffsetSnapshot("payments", 0, 4_000, 0),
            )),
            GroupSnapshot("billing", "Empty", 0, (GroupOffsetSnapshot("payments", 0, 3_000,
                                                                      1_000),)),
        ),
    )


def worker_frame() -> TopFrame:
    snapshots = {
        ONE: worker_snapshot(ONE),
        TWO: worker_snapshot(TWO, at_ms=NOW_MS - 500, second=True),
        f"{APP}@host-c:4103": worker_snapshot(f"{APP}@host-c:4103", at_ms=NOW_MS - 600_000,
                                              state="stopped", second=True),
        "other@host-a:9": worker_snapshot("other@host-a:9"),
    }
    return build_frame("127.0.0.1:40123", snapshots, app=APP, now_ms=NOW_MS)


def joins_frame() -> TopFrame:
    """The two live workers, exactly once, with a windowed join (late events on one), an
    as-of join, a table join and a stream-table join."""
    joins = {
        ONE: (JoinSnapshot("orders-payments-join-600000ms-600000ms", "window", "left", 3,
                           120_511, 8_004, 12, 118_002),
              JoinSnapshot("orders-rates-asof", "as-of", "inner", 3, 130_000, 310, 0, 120_500),
              JoinSnapshot("accounts-join-limits", "table", "outer", 3, rows=20_500),
              JoinSnapshot("orders-join-customers", "stream-table", "left", 3, 150_000,
                           rows=150_000)),
        TWO: (JoinSnapshot("orders-payments-join-600000ms-600000ms", "window", "left", 1,
                           30_002, 1_990, 0, 29_870),
              JoinSnapshot("accounts-join-limits", "table", "outer", 1, rows=6_800)),
    }
    snapshots = {
        worker: dataclasses.replace(
            worker_snapshot(worker, at_ms=at_ms, second=worker == TWO), joins=joins[worker],
            guarantee="exactly_once", transactions=3_700, aborted_transactions=worker == TWO,
        )
        for worker, at_ms in ((ONE, NOW_MS), (TWO, NOW_MS - 500))
    }
    return build_frame("127.0.0.1:40123", snapshots, app=APP, now_ms=NOW_MS)


def overview_frame() -> TopFrame:
    stopped = worker_snapshot(ONE, at_ms=NOW_MS - 185_000, state="stopped")
    return build_frame("127.0.0.1:9092", {ONE: stopped}, app=None, now_ms=NOW_MS,
                       overview=_log())
