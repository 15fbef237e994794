"""Faust-style windowed tables: ``table.tumbling(10)``, ``table[key] += 1`` in an agent,
``table[key].current()``; windows expire on event time and ``on_window_close`` gets the
window's final value; late updates are counted, never written; hopping windows update every
window holding the time."""

from __future__ import annotations

from typing import Any

import pytest

import streamer
from streamer.testing import AppRunner
from tests.streamer.running import run


def _app(kind: str = "tumbling") -> tuple[streamer.App, Any, Any, list[Any], list[Any]]:
    app = streamer.App("windowed-tables", broker="memory://")
    clicks = app.topic("clicks", value_type=str, partitions=2)
    table = app.table("clicks-per-page", default=int)
    views = table.tumbling(10, expires=5) if kind == "tumbling" else table.hopping(10, 5)
    closed: list[Any] = []
    currents: list[Any] = []
    views.on_window_close = lambda key, window, value: closed.append((key, window, value))

    @app.agent(clicks)
    async def count(stream: streamer.Stream) -> None:
        async for page in stream:
            views[page] += 1
            currents.append((page, views[page].current()))

    return app, clicks, views, closed, currents


async def _send(runner: AppRunner, topic: Any, page: str, seconds: float) -> None:
    await runner.send(topic, key=page, value=page, timestamp=int(seconds * 1000))


def test_counts_per_window_current_and_close_with_the_final_value() -> None:
    app, clicks, views, closed, currents = _app()

    async def scenario() -> dict[Any, Any]:
        async with AppRunner(app) as runner:
            for page, seconds in [("/a", 1), ("/a", 2), ("/b", 3), ("/a", 11), ("/a", 9)]:
                await _send(runner, clicks, page, seconds)
            await runner.wait_idle()
            snapshot = views.as_dict()
            # /a at 16 s: [0, 10) expires (its end 10 s + 5 s ≤ 16 s) with its 3 clicks.
            await _send(runner, clicks, "/a", 16)
            await _send(runner, clicks, "/a", 4)  # late: [0, 10) is gone
            await runner.wait_idle()
            return snapshot

    snapshot = run(scenario())
    assert snapshot[("/a", 0, 10_000)] == 3 and snapshot[("/a", 10_000, 20_000)] == 1
    assert snapshot[("/b", 0, 10_000)] == 1
    assert [c for c in currents if c[0] == "/a"] == [("/a", 1), ("/a", 2), ("/a", 1),
                                                      ("/a", 3), ("/a", 2), ("/a", 0)]
    assert ("/a", (0, 10_000), 3) in closed
    assert views.late_events == 1 and views.table.statistics().late_events == 1


def test_hopping_updates_every_window_holding_the_time() -> None:
    app, clicks, views, _, _ = _app("hopping")

    async def scenario() -> dict[Any, Any]:
        async with AppRunner(app) as runner:
            await _send(runner, clicks, "/a", 7)
            await runner.wait_idle()
            return views.as_dict()

    assert run(scenario()) == {("/a", 0, 10_000): 1, ("/a", 5_000, 15_000): 1}


def test_windowing_a_global_table_is_refused() -> None:
    app = streamer.App("windowed-bad", broker="memory://")
    with pytest.raises(streamer.StreamerError, match="global"):
        app.global_table("g").tumbling(10)
