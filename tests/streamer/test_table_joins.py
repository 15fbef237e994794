"""Joins with tables in running apps.

On both transports (a worker on an embedded folder, and one on a ``streamer broker``):
stream-table joins (partitioned and global tables, inner and left) against the tables as
they were when the events came; a table-table join, of source tables and of a table agents
write, that survives a restart (its rows come back from its changelog) and whose changes
``.to(topic)`` sends on; a foreign-key join between differently partitioned tables.

Through :class:`~streamer.testing.AppRunner`, random inputs for each join family against the
brute-force joins of tests/operators. And ``streamer worker`` refusing to start a join of
inputs that are not co-partitioned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.state import TableError

import streamer
from streamer.errors import StreamerError
from streamer.testing import AppRunner
from tests.operators.test_table_joins import foreign_key_join, relational_join
from tests.streamer.running import Running, Target, WorkerProcess, run, running

PARTITIONS = 3
SETTLE_TIMEOUT_S = 15.0


def _both(left: Any, right: Any) -> dict[str, Any]:
    return {"l": left, "r": right}


async def _send_all(topic: streamer.Topic, rows: list[tuple[str, Any]]) -> None:
    for key, value in rows:
        await topic.send(key=key, value=value)


def _apply(table: dict[str, Any], rows: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in rows:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


async def _settle(worker: Running, condition: Callable[[], bool], what: str) -> None:
    await worker.wait(condition, what, timeout_s=SETTLE_TIMEOUT_S)


# -- stream-table, both transports -------------------------------------------------------------


def test_stream_table_joins_read_the_table_as_it_is(target: Target, tmp_path: Path) -> None:
    app = streamer.App("stream-table", state_dir=str(tmp_path / "state"), commit_interval_s=0.1)
    customers_topic = app.topic("customers", value_type=dict, partitions=PARTITIONS)
    orders = app.topic("orders", value_type=dict, partitions=PARTITIONS)
    customers = app.table("customers", source=customers_topic)
    everyone = app.global_table("everyone", source=customers_topic)
    seen: dict[str, list[Any]] = {"inner": [], "left": [], "global inner": [], "global left": []}

    def collect(label: str, join: Callable[[streamer.Stream], streamer.Stream]) -> None:
        @app.agent(orders, name=label.replace(" ", "_"))
        async def agent(stream: streamer.Stream) -> None:
            async for row in join(stream):
                seen[label].append(row)

    collect("inner", lambda s: s.join(customers))
    collect("left", lambda s: s.join(customers, how="left", joiner=_both))
    collect("global inner", lambda s: s.join(everyone, on=lambda o: o["customer"]))
    collect("global left", lambda s: s.join(everyone, how="left", on=lambda o: o["customer"]))

    phases = [
        [("c1", {"name": "Ada"}), ("c2", {"name": "Grace"}), ("c3", {"name": "Alan"}),
         ("c2", None)],
        [("c1", {"name": "Ada L."}), ("c3", None), ("c2", {"name": "Grace H."})],
    ]
    order_keys = ["c1", "c2", "c3", "c4", "c1"]  # c4 never exists

    async def scenario() -> list[dict[str, Any]]:
        tables: list[dict[str, Any]] = []
        table: dict[str, Any] = {}
        async with running(app, target) as worker:
            for number, rows in enumerate(phases):
                expected = dict(_apply(table, rows))
                tables.append(expected)
                await _send_all(customers_topic, rows)
                await _settle(worker, lambda e=expected: customers.as_dict() == e  # type: ignore[misc]
                              and everyone.as_dict() == e, "both tables loaded")
                for index, key in enumerate(order_keys):
                    await orders.send(key=key, value={"customer": key, "n": number * 10 + index})
                await _settle(worker, lambda n=number: len(seen["global left"]) == 5 * (n + 1),
                              "the orders joined")
            await _settle(worker, lambda: len(seen["left"]) == 10, "every agent done")
        return tables

    tables = run(scenario())
    expected: dict[str, list[Any]] = {label: [] for label in seen}
    for number, table in enumerate(tables):
        for index, key in enumerate(order_keys):
            order = {"customer": key, "n": number * 10 + index}
            match = table.get(key)
            if match is not None:
                expected["inner"].append((order, match))
                expected["global inner"].append((order, match))
            expected["left"].append(_both(order, match))
            expected["global left"].append((order, match))
    for label, rows in seen.items():
        assert sorted(rows, key=repr) == sorted(expected[label], key=repr), label


# -- table-table, both transports --------------------------------------------------------------


def _tables_app(tmp_path: Path, forwarded: dict[str, Any]) -> tuple[streamer.App, dict[str, Any]]:
    app = streamer.App("table-table", state_dir=str(tmp_path / "state"), commit_interval_s=0.1)
    topics = {name: app.topic(name, value_type=dict, partitions=PARTITIONS)
              for name in ("left-rows", "right-rows", "clicks", "joined-changes")}
    left = app.table("left", source=topics["left-rows"])
    right = app.table("right", source=topics["right-rows"])
    counts = app.table("counts", default=int, partitions=PARTITIONS)
    joined = left.join(right, how="outer", joiner=_both, name="joined")
    joined.to(topics["joined-changes"])
    counted = counts.join(left, how="left")  # rows of a table agents write

    @app.agent(topics["clicks"])
    async def count(stream: streamer.Stream) -> None:
        async for click in stream:
            key = stream.current_event.key  # type: ignore[union-attr]
            if click["reset"]:
                counts.pop(key, None)
            else:
                counts[key] += 1

    @app.agent(topics["joined-changes"])
    async def replay(stream: streamer.Stream) -> None:
        async for event in stream.events():  # the latest change of each key wins
            if event.value is None:
                forwarded.pop(event.key, None)
            else:
                forwarded[event.key] = event.value

    return app, {"topics": topics, "joined": joined, "counted": counted, "counts": counts}


def test_a_table_join_follows_both_tables_and_survives_a_restart(
    target: Target, tmp_path: Path
) -> None:
    phases = [
        {"left-rows": [("a", {"x": 1}), ("b", {"x": 2}), ("c", {"x": 3}), ("b", None)],
         "right-rows": [("b", {"y": 2}), ("c", {"y": 3}), ("d", {"y": 4})],
         "clicks": [("a", {"reset": False}), ("a", {"reset": False}), ("e", {"reset": False})]},
        {"left-rows": [("c", {"x": 30}), ("e", {"x": 5})],
         "right-rows": [("d", None), ("f", {"y": 6})],
         "clicks": [("a", {"reset": True}), ("e", {"reset": False}), ("b", {"reset": False})]},
    ]
    state: dict[str, dict[str, Any]] = {"left-rows": {}, "right-rows": {}, "counts": {}}
    forwarded: dict[str, Any] = {}  # what joined.to() sent, replayed by an agent

    def expect() -> tuple[dict[str, Any], dict[str, Any]]:
        left, right = state["left-rows"], state["right-rows"]
        return (relational_join(left, right, "outer", _both),
                {k: (n, left.get(k)) for k, n in state["counts"].items()})

    async def phase(rows: dict[str, list[tuple[str, Any]]]) -> list[tuple[Any, ...]]:
        """Run a worker over these new rows: the joined tables before and after."""
        app, parts = _tables_app(tmp_path, forwarded)
        for name in ("left-rows", "right-rows"):
            _apply(state[name], rows[name])
        for key, click in rows["clicks"]:
            if click["reset"]:
                state["counts"].pop(key, None)
            else:
                state["counts"][key] = state["counts"].get(key, 0) + 1
        joined_rows, counted_rows = expect()
        async with running(app, target) as worker:
            await _settle(worker, lambda: all(len(parts[name].active) == PARTITIONS
                                              for name in ("joined", "counted")),
                          "every partition assigned and restored")
            before = (parts["joined"].as_dict(), parts["counted"].as_dict())
            for name, records in rows.items():
                await _send_all(parts["topics"][name], records)
            await _settle(worker, lambda: parts["joined"].as_dict() == joined_rows
                          and parts["counted"].as_dict() == counted_rows
                          and forwarded == joined_rows, "the joined tables and their changes")
            with pytest.raises(TableError, match="kept by the join of 'left' with 'right'"):
                parts["joined"]["z"] = 1
        return [before]

    async def scenario() -> list[Any]:
        return await phase(phases[0]) + await phase(phases[1])

    befores = run(scenario(), timeout_s=120)
    first_joined = relational_join({"a": {"x": 1}, "c": {"x": 3}},
                                   {"b": {"y": 2}, "c": {"y": 3}, "d": {"y": 4}}, "outer", _both)
    assert befores[0] == ({}, {})
    assert befores[1] == (first_joined, {"a": (2, {"x": 1}), "e": (1, None)})  # restored


def test_a_table_join_declared_over_tables_with_rows_joins_them(
    target: Target, tmp_path: Path
) -> None:
    """The tables fill up in a first run without the join; a second run declares it: the
    joined table has the rows the tables already held, then follows their changes, and its
    changes (sent on with .to) include the built rows."""
    left_rows = [(f"k{n}", {"x": n}) for n in range(12)] + [("k3", None)]
    right_rows = [(f"k{n}", {"y": n}) for n in range(6, 18)]
    later = [("k7", None), ("k20", {"y": 20})]
    forwarded: dict[str, Any] = {}

    def app_of(with_join: bool) -> tuple[streamer.App, dict[str, Any]]:
        app = streamer.App("late-join", state_dir=str(tmp_path / "state"),
                           commit_interval_s=0.1)
        topics = {name: app.topic(name, value_type=dict, partitions=PARTITIONS)
                  for name in ("left-rows", "right-rows", "joined-changes")}
        parts: dict[str, Any] = {"topics": topics,
                                 "left": app.table("left", source=topics["left-rows"]),
                                 "right": app.table("right", source=topics["right-rows"])}
        if with_join:
            parts["joined"] = parts["left"].join(parts["right"], how="outer", joiner=_both,
                                                 name="joined")
            parts["joined"].to(topics["joined-changes"])

            @app.agent(topics["joined-changes"])
            async def replay(stream: streamer.Stream) -> None:
                async for event in stream.events():
                    if event.value is None:
                        forwarded.pop(event.key, None)
                    else:
                        forwarded[event.key] = event.value

        return app, parts

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        app, parts = app_of(with_join=False)
        left = _apply({}, left_rows)
        right = _apply({}, right_rows)
        async with running(app, target) as worker:
            await _send_all(parts["topics"]["left-rows"], left_rows)
            await _send_all(parts["topics"]["right-rows"], right_rows)
            await _settle(worker, lambda: parts["left"].as_dict() == left
                          and parts["right"].as_dict() == right, "the two tables")
        app, parts = app_of(with_join=True)
        async with running(app, target) as worker:
            want = relational_join(left, right, "outer", _both)
            await _settle(worker, lambda: parts["joined"].as_dict() == want,
                          "the join of the rows the tables held")
            built = parts["joined"].as_dict()
            await _send_all(parts["topics"]["right-rows"], later)
            want = relational_join(left, _apply(right, later), "outer", _both)
            await _settle(worker, lambda: parts["joined"].as_dict() == want
                          and forwarded == want, "the join following a change")
        return built, want

    built, final = run(scenario(), timeout_s=90)
    assert len(built) == 17 and built["k0"] == _both({"x": 0}, None)  # k0–k17 but k3
    assert final["k7"] == _both({"x": 7}, None) and final["k20"] == _both(None, {"y": 20})


# -- foreign key, both transports --------------------------------------------------------------


def test_a_foreign_key_join_across_partitions(target: Target, tmp_path: Path) -> None:
    app = streamer.App("foreign-key", state_dir=str(tmp_path / "state"), commit_interval_s=0.1)
    orders_topic = app.topic("order-rows", value_type=dict, partitions=3)
    customers_topic = app.topic("customer-rows", value_type=dict, partitions=2)
    orders = app.table("orders", source=orders_topic)
    customers = app.table("customers", source=customers_topic)
    inner = orders.join(customers, on=lambda order: order["fk"], name="inner")
    left = orders.join(customers, on=lambda order: order["fk"], how="left", name="left")
    customer_rows = {f"c{n}": {"name": f"customer {n}"} for n in range(6)}
    order_rows = {f"o{n}": {"fk": f"c{n % 8}", "n": n} for n in range(12)}  # c6, c7: none
    changes = [
        ("customers", [("c1", {"name": "renamed"}), ("c2", None), ("c7", {"name": "new"})]),
        ("orders", [("o0", {"fk": "c3", "n": 0}), ("o3", None), ("o4", {"fk": None, "n": 4}),
                    ("o5", {"fk": "c7", "n": 5})]),
    ]

    async def scenario() -> None:
        tables = {"orders": dict(order_rows), "customers": dict(customer_rows)}
        topics = {"orders": orders_topic, "customers": customers_topic}
        async with running(app, target) as worker:
            await _send_all(customers_topic, list(customer_rows.items()))
            await _send_all(orders_topic, list(order_rows.items()))
            for step in [None, *changes]:
                if step is not None:
                    _apply(tables[step[0]], step[1])
                    await _send_all(topics[step[0]], step[1])
                want = {how: foreign_key_join(tables["orders"], tables["customers"], how)
                        for how in ("inner", "left")}
                await _settle(worker, lambda w=want: inner.as_dict() == w["inner"]  # type: ignore[misc]
                              and left.as_dict() == w["left"], "the foreign-key joins")

    run(scenario(), timeout_s=90)


def test_join_options_are_checked(tmp_path: Path) -> None:
    app = streamer.App("checks", broker="memory://")
    rows = app.topic("rows", value_type=dict)
    table = app.table("table", partitions=2)
    everyone = app.global_table("everyone", partitions=2)
    with pytest.raises(StreamerError, match='how is one of "inner", "left", "outer", not \'full\''):
        table.join(app.table("other", partitions=2), how="full")
    with pytest.raises(StreamerError, match="'everyone' is global"):
        table.join(everyone)
    with pytest.raises(StreamerError, match="both must be known"):
        table.join(app.table("unsized"), on=lambda value: value["fk"])
    with pytest.raises(StreamerError, match="takes the topic's partitions"):
        app.table("sourced", source=rows, partitions=4)
    with pytest.raises(StreamerError, match="group_by"):
        rows.stream().join(table, on=lambda value: value["fk"])
    with pytest.raises(StreamerError, match='how is one of "inner", "left", not \'outer\''):
        rows.stream().join(table, how="outer")


# -- random inputs through AppRunner -----------------------------------------------------------

RUNNER_EXAMPLES = settings(max_examples=15, deadline=None)
ROW_KEYS = st.sampled_from(["k1", "k2", "k3", "k4", "k5"])
ROWS = st.lists(st.tuples(ROW_KEYS, st.one_of(st.none(), st.integers(0, 9))), max_size=25)


async def _converge(runner: AppRunner, condition: Callable[[], bool], what: str) -> None:
    """Changes travel through changelogs and internal topics: wait until they arrived."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        await runner.wait_idle()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@RUNNER_EXAMPLES
@given(table_rows=ROWS, events=ROWS, how=st.sampled_from(["inner", "left"]))
def test_stream_table_join_in_a_worker_matches_the_oracle(
    table_rows: list[tuple[str, Any]], events: list[tuple[str, Any]], how: str
) -> None:
    app = streamer.App("runner-stream-table", broker="memory://")
    rows_topic = app.topic("rows", value_type=int, partitions=PARTITIONS)
    events_topic = app.topic("events", value_type=int, partitions=PARTITIONS)
    out = app.topic("out", value_type=dict, partitions=PARTITIONS)
    table = app.table("rows", source=rows_topic)

    @app.agent(events_topic)
    async def join(stream: streamer.Stream) -> None:
        await stream.join(table, how=how).to(out)

    final = _apply({}, table_rows)

    async def scenario() -> list[tuple[str, Any]]:
        async with AppRunner(app) as runner:
            for key, value in table_rows:
                await runner.send(rows_topic, key=key, value=value)
            await _converge(runner, lambda: table.as_dict() == final, "the table")
            for key, value in events:
                await runner.send(events_topic, key=key, value=value)
            await _converge(runner, lambda: True, "the events")
            return [(e.key, tuple(e.value)) for e in runner.sent(out)]

    expected = [(key, (value, final.get(key))) for key, value in events
                if value is not None and (how == "left" or key in final)]
    assert sorted(run(scenario())) == sorted(expected)


@RUNNER_EXAMPLES
@given(left_rows=ROWS, right_rows=ROWS, how=st.sampled_from(["inner", "left", "outer"]))
def test_table_join_in_a_worker_matches_the_oracle(
    left_rows: list[tuple[str, Any]], right_rows: list[tuple[str, Any]], how: str
) -> None:
    app = streamer.App("runner-table-table", broker="memory://")
    left_topic = app.topic("left", value_type=int, partitions=PARTITIONS)
    right_topic = app.topic("right", value_type=int, partitions=PARTITIONS)
    joined = app.table("left", source=left_topic).join(
        app.table("right", source=right_topic), how=how)
    expected = relational_join(_apply({}, left_rows), _apply({}, right_rows), how, None)

    async def scenario() -> dict[str, Any]:
        async with AppRunner(app) as runner:
            for key, value in left_rows:
                await runner.send(left_topic, key=key, value=value)
            for key, value in right_rows:
                await runner.send(right_topic, key=key, value=value)
            await _converge(runner, lambda: joined.as_dict() == expected, "the joined table")
            return joined.as_dict()

    assert run(scenario()) == expected


@RUNNER_EXAMPLES
@given(order_rows=st.lists(st.tuples(ROW_KEYS, st.one_of(
    st.none(), st.fixed_dictionaries({"fk": st.one_of(st.none(), st.sampled_from("abc"))}))),
    max_size=25),
    customer_rows=st.lists(st.tuples(st.sampled_from("abc"), st.one_of(st.none(),
                                                                       st.integers(0, 9))),
                           max_size=15),
    how=st.sampled_from(["inner", "left"]))
def test_foreign_key_join_in_a_worker_matches_the_oracle(
    order_rows: list[tuple[str, Any]], customer_rows: list[tuple[str, Any]], how: str
) -> None:
    app = streamer.App("runner-foreign-key", broker="memory://", commit_interval_s=0.05)
    orders_topic = app.topic("orders", value_type=dict, partitions=3)
    customers_topic = app.topic("customers", value_type=int, partitions=2)
    joined = app.table("orders", source=orders_topic).join(
        app.table("customers", source=customers_topic), on=lambda o: o["fk"], how=how)
    expected = foreign_key_join(_apply({}, order_rows), _apply({}, customer_rows), how)

    async def scenario() -> dict[str, Any]:
        async with AppRunner(app) as runner:
            for index in range(max(len(order_rows), len(customer_rows))):  # interleaved
                for topic, rows in ((orders_topic, order_rows),
                                    (customers_topic, customer_rows)):
                    if index < len(rows):
                        await runner.send(topic, key=rows[index][0], value=rows[index][1])
            await _converge(runner, lambda: joined.as_dict() == expected, "the joined table")
            return joined.as_dict()

    assert run(scenario()) == expected


# -- co-partitioning, checked by `streamer worker` at startup -----------------------------------


def test_a_join_of_inputs_not_copartitioned_stops_the_worker(tmp_path: Path) -> None:
    async def scenario() -> tuple[WorkerProcess, int | None]:
        worker = WorkerProcess("tests.streamer.apps.mismatched_join:app", str(tmp_path / "log"))
        try:
            await asyncio.to_thread(worker.process.wait, 30)
        finally:
            worker.kill()
        return worker, worker.process.returncode

    worker, code = run(scenario())
    assert code == 1, worker.output
    assert "Traceback" not in worker.output, worker.output
    assert worker.output.strip().splitlines()[-1] == (
        "Error: stream-table join with table 'customers': inputs are not co-partitioned "
        "(topic 'mismatched-orders' has 3, table 'customers' has 2 partitions). Repartition "
        "table 'customers' to 3 partitions first, e.g. stream.group_by(key, partitions=3) or "
        "a table declared with partitions=3; or make the table global (app.global_table)."
    ), worker.output
    assert "worker of mismatched-join running" not in worker.output  # stopped before events


# -- the example --------------------------------------------------------------------------------


def test_the_enrichment_example_enriches_orders(tmp_path: Path) -> None:
    async def scenario() -> tuple[WorkerProcess, int]:
        worker = WorkerProcess("examples.enrichment:app", str(tmp_path / "log"))
        try:
            await worker.wait_for_line(r"orders enriched .* by \w+ \((bronze|silver|gold)\)",
                                       timeout_s=30)
            code = worker.terminate()
        finally:
            worker.kill()
        return worker, code

    worker, code = run(scenario())
    assert code == 0, worker.output
    assert "Traceback" not in worker.output, worker.output
