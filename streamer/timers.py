"""Timers and crontabs: app functions run on a schedule by every worker, or by the leader.

The leader is the worker that owns partition 0 of the app's ``<app>-__leader`` topic in the
consumer group, so exactly one worker of a running app is leader, and another takes over
when it stops or dies.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

from croniter import croniter

from .errors import StreamerError

__all__ = ["Crontab", "Timer"]

logger = logging.getLogger("streamer.timers")


class Timer:
    def __init__(self, fn: Callable[[], Any], interval_s: float, *, on_leader: bool) -> None:
        if interval_s <= 0:
            raise StreamerError(f"timer {fn.__name__}: interval must be > 0")
        self.fn = fn
        self.name = fn.__name__
        self.interval_s = interval_s
        self.on_leader = on_leader
        self.runs = 0

    def seconds_until_next(self) -> float:
        return self.interval_s


class Crontab(Timer):
    def __init__(
        self, fn: Callable[[], Any], schedule: str, *, timezone: str | None, on_leader: bool
    ) -> None:
        super().__init__(fn, 1.0, on_leader=on_leader)
        if not croniter.is_valid(schedule):
            raise StreamerError(f"crontab {fn.__name__}: invalid schedule {schedule!r}")
        try:
            self.zone = zoneinfo.ZoneInfo(timezone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise StreamerError(f"crontab {fn.__name__}: unknown timezone {timezone!r}") from None
        self.schedule = schedule

    def seconds_until_next(self) -> float:
        now = dt.datetime.now(self.zone)
        following: dt.datetime = croniter(self.schedule, now).get_next(dt.datetime)
        return max((following - now).total_seconds(), 0.0)


async def run_timer(
    timer: Timer, is_leader: Callable[[], bool], on_error: Callable[[str, BaseException], None]
) -> None:
    """Run ``timer`` forever; an error is recorded and logged, and the schedule goes on."""
    while True:
        await asyncio.sleep(timer.seconds_until_next())
        if timer.on_leader and not is_leader():
            continue
        started = time.monotonic()
        try:
            await timer.fn()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            on_error(timer.name, error)
            logger.exception("timer %s failed", timer.name)
        timer.runs += 1
        logger.debug("timer %s ran in %.3fs", timer.name, time.monotonic() - started)
