"""streamer.testing: an app run in-process, fed by the test, its outputs read back."""

from __future__ import annotations

import asyncio

import streamer
from streamer.testing import AppRunner, ManualClock


def _app() -> tuple[streamer.App, streamer.Topic, streamer.Topic, list[int]]:
    app = streamer.App("runner-test")
    views = app.topic("views", value_type=dict, partitions=2)
    popular = app.topic("popular", value_type=dict)
    ticks: list[int] = []

    @app.agent(views)
    async def find_popular(stream: streamer.Stream) -> None:
        async for view in stream.filter(lambda v: v["duration_ms"] > 1000):
            await popular.send(key=view["page"], value={"page": view["page"]})

    @app.timer(10)
    async def tick() -> None:
        ticks.append(len(ticks))

    return app, views, popular, ticks


def test_feed_wait_and_read_what_was_sent() -> None:
    app, views, popular, _ = _app()

    async def main() -> list[streamer.Event]:
        async with AppRunner(app) as runner:
            for page, duration in [("/a", 2000), ("/b", 10), ("/c", 1500)]:
                await runner.send(views, key=page, value={"page": page, "duration_ms": duration})
            await runner.wait_idle()
            return runner.sent(popular)

    sent = asyncio.run(main())
    assert sorted(event.value["page"] for event in sent) == ["/a", "/c"]
    assert {event.key for event in sent} == {"/a", "/c"}


def test_manual_clock_runs_due_timers_and_stamps_records() -> None:
    app, views, _, ticks = _app()
    clock = ManualClock(time_ms=1_000_000)

    async def main() -> list[streamer.Event]:
        async with AppRunner(app, clock=clock) as runner:
            await runner.advance(35)
            await runner.send(views, key="/x", value={"page": "/x", "duration_ms": 1})
            await runner.wait_idle()
            return runner.sent(views)

    sent = asyncio.run(main())
    assert ticks == [0, 1, 2]
    assert [event.timestamp for event in sent] == [1_035_000]
