"""Timers, crontabs and tasks: they run on schedule in a real worker (both transports),
``on_leader`` ones on exactly one worker of several, and crontab's scheduling math (time
zones, daylight saving) is checked against a fixed clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import types
import zoneinfo
from collections import Counter

import pytest

import streamer
from streamer import timers
from streamer.timers import Crontab, Timer
from tests.streamer.running import Target, run, running


def test_timers_crontabs_and_tasks_run_in_a_worker(target: Target) -> None:
    async def scenario() -> tuple[list[float], list[float], list[str], list[str]]:
        app = streamer.App("scheduled", listen=None)
        ticks: list[float] = []
        cron_runs: list[float] = []
        tasks: list[str] = []
        failing_runs: list[str] = []

        @app.timer(0.05)
        async def tick() -> None:
            ticks.append(asyncio.get_running_loop().time())

        @app.crontab("* * * * * *")  # croniter's sixth field: every second
        async def every_second() -> None:
            cron_runs.append(dt.datetime.now(dt.UTC).timestamp())

        @app.timer(0.05)
        async def broken() -> None:
            failing_runs.append("ran")
            raise ValueError("timer trouble")

        @app.task
        async def once() -> None:
            tasks.append("started")

        async with running(app, target) as worker:
            await worker.wait(lambda: len(cron_runs) >= 2 and len(ticks) >= 10
                              and len(failing_runs) >= 3, "two crontab runs", timeout_s=5)
            errors = [error for error in app.recent_errors if error.source == "broken"]
            assert errors and errors[0].error == "ValueError: timer trouble"
        return ticks, cron_runs, tasks, failing_runs

    ticks, cron_runs, tasks, _ = run(scenario())
    assert tasks == ["started"]
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert min(gaps) >= 0.045
    # Once a second, on the second: never twice in one second (where it lands within the
    # second depends on the machine's load; the schedule's math is checked below).
    assert len({int(when) for when in cron_runs}) == len(cron_runs), cron_runs


def test_a_failing_task_stops_the_worker_with_its_error(target: Target) -> None:
    async def scenario() -> None:
        app = streamer.App("tasking", listen=None)

        @app.task
        async def setup() -> None:
            raise KeyError("missing-config")

        with pytest.raises(streamer.StreamerError,
                           match=r"task setup failed: KeyError: 'missing-config'"):
            await asyncio.wait_for(app.run(broker=target.url), 30)

    run(scenario())


def test_on_leader_timers_run_on_one_worker_of_several(target: Target) -> None:
    """Two workers of one app: the ``on_leader`` timer runs on one of them only, the plain
    timer on both; when the leader leaves, the other takes over."""

    def build(label: str, runs: Counter[str], listen: str | None) -> streamer.App:
        app = streamer.App("leading", listen=listen, commit_interval_s=0.1)
        app.topic("work", partitions=2)

        @app.timer(0.05, on_leader=True)
        async def lead() -> None:
            runs[f"lead-{label}"] += 1

        @app.timer(0.05)
        async def everywhere() -> None:
            runs[f"all-{label}"] += 1

        @app.agent(app.topics["work"])
        async def idle(stream: streamer.Stream) -> None:
            async for _ in stream:
                pass

        return app

    async def scenario() -> tuple[Counter[str], Counter[str]]:
        runs: Counter[str] = Counter()
        # Embedded: "one" owns the folder and serves it; "two" joins over the protocol.
        one, two = build("one", runs, "127.0.0.1:0"), build("two", runs, None)
        async with running(one, target) as worker_one:
            await worker_one.wait(lambda: runs["lead-one"] >= 3, "one leading alone")
            async with running(two, target) as worker_two:
                await worker_two.wait(lambda: _stable_with_one_leader(one, two),
                                      "a stable group of two with one leader")
                before = runs.copy()
                await asyncio.sleep(0.5)
                during = runs - before
            await worker_one.wait(lambda: one.worker is not None and one.worker.is_leader(),
                                  "one leading after two left")
            before = runs.copy()
            await asyncio.sleep(0.3)
            after = runs - before
        return during, after

    during, after = run(scenario())
    assert (during["lead-one"] > 0) != (during["lead-two"] > 0), during
    assert during["all-one"] >= 3 and during["all-two"] >= 3, during
    assert after["lead-one"] >= 2 and after["lead-two"] == 0, after


def _stable_with_one_leader(*apps: streamer.App) -> bool:
    workers = [app.worker for app in apps]
    return (
        all(w is not None and w.consumer is not None and w.consumer.assignment()
            for w in workers)
        and sum(w.is_leader() for w in workers if w is not None) == 1
    )


# -- crontab scheduling math, against a fixed clock ---------------------------------------


def _frozen_at(monkeypatch: pytest.MonkeyPatch, now_utc: dt.datetime) -> None:
    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> FrozenDatetime:
            moment = now_utc.astimezone(tz) if tz is not None else now_utc
            return cls.fromtimestamp(moment.timestamp(), tz)

    monkeypatch.setattr(timers, "dt", types.SimpleNamespace(datetime=FrozenDatetime))


async def _noop() -> None:
    pass


@pytest.mark.parametrize(("schedule", "zone", "now", "expected_s"), [
    ("* * * * *", None, "2024-05-01T12:00:30+00:00", 30.0),
    ("* * * * *", None, "2024-05-01T12:00:00+00:00", 60.0),  # on the minute: the next one
    ("*/15 * * * *", None, "2024-05-01T12:14:59.500+00:00", 0.5),
    ("0 0 * * *", None, "2024-05-01T23:00:00+00:00", 3600.0),
    ("30 2 * * 1", None, "2024-05-01T00:00:00+00:00", 5 * 86400 + 2.5 * 3600),  # Monday
    # 09:00 in Paris; the night in between moves the clocks forward (CET → CEST), so the
    # wait is 22.5 h, not 23.5 h.
    ("0 9 * * *", "Europe/Paris", "2024-03-30T08:30:00+00:00", 22.5 * 3600),
    ("0 9 * * *", "America/New_York", "2024-05-01T13:00:00+00:00", 86400.0),  # 09:00 EDT
])
def test_crontab_waits_until_the_next_matching_time(
    monkeypatch: pytest.MonkeyPatch, schedule: str, zone: str | None, now: str,
    expected_s: float,
) -> None:
    _frozen_at(monkeypatch, dt.datetime.fromisoformat(now))
    crontab = Crontab(_noop, schedule, timezone=zone, on_leader=False)
    assert crontab.seconds_until_next() == pytest.approx(expected_s, abs=1e-3)
    assert crontab.zone == zoneinfo.ZoneInfo(zone or "UTC")


def test_bad_schedules_are_refused_with_the_function_named() -> None:
    with pytest.raises(streamer.StreamerError, match=r"crontab _noop: invalid schedule"):
        Crontab(_noop, "61 * * * *", timezone=None, on_leader=False)
    with pytest.raises(streamer.StreamerError, match=r"crontab _noop: unknown timezone"):
        Crontab(_noop, "* * * * *", timezone="Mars/Olympus", on_leader=False)
    with pytest.raises(streamer.StreamerError, match=r"timer _noop: interval must be > 0"):
        Timer(_noop, 0, on_leader=False)
    app = streamer.App("declaring")
    with pytest.raises(streamer.StreamerError):
        app.crontab("not a schedule")(_noop)
