"""``streamer top``: a terminal monitor of a running job, from the snapshots its workers
publish to the log's ``__streamer_workers`` topic (see :mod:`streamer.statistics_log`).

On a terminal it takes the whole screen and redraws every ``--refresh`` seconds; keys
change the view (:func:`~streamer.cli.top_view.apply_key`). ``--once`` prints one frame,
``--json`` prints the snapshots for scripts, and when stdout is not a terminal it prints
plain tables every ``--refresh`` seconds. With no worker running it shows what the log
holds: partitions, offsets, consumer groups and their lag, like ``kcat -L`` with lag.

``--broker`` takes ``HOST:PORT`` (or ``kafka://``), or the folder of an embedded log, whose
``worker.json`` names where its worker serves it; by default ``./streamer-data`` when a
worker serves it, else ``127.0.0.1:9092``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import TopicPartition
from rich.console import Console
from rich.live import Live

from streamer.statistics import (
    LOG_PARTITIONS_MAX,
    GroupOffsetSnapshot,
    GroupSnapshot,
    LogPartitionSnapshot,
    LogSnapshot,
)
from streamer.statistics_log import SnapshotReader
from streamer.transport.embedded import read_worker_address

from .top_render import render
from .top_view import CTRL_C, ESCAPE, TopFrame, ViewState, apply_key, build_frame
from .topics import DEFAULT_BROKER, ClientCommandError, connected, parse_bootstrap, run_client

__all__ = ["TopSettings", "read_log_overview", "resolve_broker", "run_top"]

DEFAULT_DATA = "./streamer-data"
GROUPS_MAX = 100  # consumer groups described in the log overview
RESIZE = "\x00resize"  # not a key: the terminal changed size, redraw


@dataclass(frozen=True)
class TopSettings:
    bootstrap: list[str]
    broker: str  # as the header names it
    app: str | None
    refresh_s: float
    once: bool
    as_json: bool
    timeout_s: float


def resolve_broker(value: str | None) -> tuple[list[str], str]:
    """``(bootstrap addresses, the log's name for the header)`` from ``--broker``."""
    if value is None:
        found = read_worker_address(DEFAULT_DATA) if os.path.isdir(DEFAULT_DATA) else None
        if found is None or found[0] is None:
            return parse_bootstrap(DEFAULT_BROKER), DEFAULT_BROKER
        value = DEFAULT_DATA
    if value == "memory://":
        raise click.BadParameter(
            "a memory:// log lives inside its worker: pass the address the worker logs "
            "(\"the log is served at HOST:PORT\")", param_hint="--broker")
    folder = value.removeprefix("file://")
    if value.startswith("file://") or os.path.isdir(folder):
        found = read_worker_address(folder)
        if found is None or found[0] is None:
            raise ClientCommandError(
                f"no worker serves the log in {folder} (no address in "
                f"{os.path.join(folder, 'worker.json')}): start one with streamer worker, "
                "or pass --broker HOST:PORT"
            )
        host, port = found[0]
        return [f"{host}:{port}"], f"{folder} ({host}:{port})"
    try:
        bootstrap = parse_bootstrap(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--broker") from None
    return bootstrap, ",".join(bootstrap)


# -- reading the log ---------------------------------------------------------------------------


async def read_log_overview(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> LogSnapshot:
    """Partitions with start and end offsets, and consumer groups with their commits and lag
    (internal topics left out)."""
    metadata: list[dict[str, Any]] = await admin.describe_topics(None)
    partitions = sorted(
        TopicPartition(topic["topic"], p["partition"])
        for topic in metadata if not topic["error_code"] and not topic["is_internal"]
        for p in topic["partitions"]
    )
    shown = partitions[:LOG_PARTITIONS_MAX]
    starts = await consumer.beginning_offsets(shown) if shown else {}
    ends = await consumer.end_offsets(shown) if shown else {}
    groups = await _groups(admin, {tp: int(end) for tp, end in ends.items()})
    return LogSnapshot(
        tuple(LogPartitionSnapshot(tp.topic, tp.partition, int(starts[tp]), int(ends[tp]), None)
              for tp in shown),
        groups,
        len(partitions) - len(shown),
    )


async def _groups(
    admin: AIOKafkaAdminClient, ends: dict[TopicPartition, int]
) -> tuple[GroupSnapshot, ...]:
    listed = sorted(group for group, *_ in await admin.list_consumer_groups())[:GROUPS_MAX]
    if not listed:
        return ()
    described: dict[str, tuple[str, int]] = {}
    for response in await admin.describe_consumer_groups(listed):
        for group in response.to_object()["groups"]:
            described[group["group"]] = (group["state"] or "?", len(group["members"]))
    found = []
    for group_id in listed:
        committed = await admin.list_consumer_group_offsets(group_id)
        offsets = tuple(
            GroupOffsetSnapshot(tp.topic, tp.partition, int(meta.offset),
                                max(ends[tp] - int(meta.offset), 0) if tp in ends else None)
            for tp, meta in sorted(committed.items()) if meta.offset >= 0
        )
        state, members = described.get(group_id, ("?", 0))
        found.append(GroupSnapshot(group_id, state, members, offsets))
    return tuple(found)


class TopSource:
    """Frames from the log: worker snapshots, and the overview when no worker is live."""

    def __init__(self, settings: TopSettings, consumer: AIOKafkaConsumer,
                 admin: AIOKafkaAdminClient) -> None:
        self.settings = settings
        self.consumer = consumer
        self.admin = admin
        self.reader = SnapshotReader(consumer)

    async def frame(self) -> TopFrame:
        settings = self.settings
        bounded = settings.timeout_s * 3  # a few requests, each bounded by the client
        snapshots = await asyncio.wait_for(self.reader.read(), bounded)
        now_ms = time.time_ns() // 1_000_000
        frame = build_frame(settings.broker, snapshots, app=settings.app, now_ms=now_ms,
                            utc_offset_s=time.localtime().tm_gmtoff)
        if frame.workers:
            return frame
        overview = await asyncio.wait_for(read_log_overview(self.admin, self.consumer), bounded)
        return dataclasses.replace(frame, overview=overview)


@contextlib.asynccontextmanager
async def _source(settings: TopSettings) -> Any:
    timeout_ms = int(settings.timeout_s * 1000)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, client_id="streamer-top",
                                enable_auto_commit=False, request_timeout_ms=timeout_ms)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="streamer-top",
                                request_timeout_ms=timeout_ms)
    async with connected(consumer, settings.bootstrap, settings.timeout_s), \
            connected(admin, settings.bootstrap, settings.timeout_s):
        yield TopSource(settings, consumer, admin)


# -- output modes ------------------------------------------------------------------------------


def frame_json(frame: TopFrame) -> bytes:
    return orjson.dumps({
        "broker": frame.broker, "at_ms": frame.now_ms, "app": frame.app,
        "other_apps": frame.other_apps, "workers": frame.workers, "gone": frame.gone,
        "log": frame.overview,
    }, option=orjson.OPT_INDENT_2)


async def _once(settings: TopSettings, console: Console) -> None:
    async with _source(settings) as source:
        frame = await source.frame()
    if settings.as_json:
        sys.stdout.buffer.write(frame_json(frame) + b"\n")
        sys.stdout.flush()
        return
    console.print(render(frame, width=console.width, plain=not console.is_terminal))


async def _plain(settings: TopSettings, console: Console) -> None:
    """Not a terminal: a frame of plain tables every refresh, until a signal."""
    stop = _stop_on_signals()
    async with _source(settings) as source:
        while not stop.is_set():
            frame = await source.frame()
            console.print(render(frame, width=console.width, plain=True))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.refresh_s)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def split_keys(data: str) -> Iterator[str]:
    """Characters as keys; escape sequences (arrows, function keys) are skipped, a lone
    Escape is a key."""
    index = 0
    while index < len(data):
        char = data[index]
        index += 1
        if char == ESCAPE and index < len(data) and data[index] in "[O":
            index += 1
            while index < len(data) and not (data[index].isalpha() or data[index] == "~"):
                index += 1
            index += 1
            continue
        yield char


class _Keyboard:
    """The terminal in cbreak mode (keys arrive one by one, unechoed); keys, Ctrl-C,
    SIGTERM and resizes arrive in one queue."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.keys: asyncio.Queue[str] = asyncio.Queue(256)
        self._saved: Any = None

    def __enter__(self) -> _Keyboard:
        loop = asyncio.get_running_loop()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        loop.add_reader(self.fd, self._readable)
        for signum, key in ((signal.SIGINT, CTRL_C), (signal.SIGTERM, CTRL_C),
                            (signal.SIGWINCH, RESIZE)):
            loop.add_signal_handler(signum, self._put, key)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.fd)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGWINCH):
            loop.remove_signal_handler(signum)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def _readable(self) -> None:
        data = os.read(self.fd, 64).decode("utf-8", "ignore")
        for key in split_keys(data):
            self._put(key)

    def _put(self, key: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a held-down key: drop the excess
            self.keys.put_nowait(key)



async def _interactive(settings: TopSettings, console: Console) -> None:
    """Draw, then wait for a key, a frame being read, or the next refresh. Frames are read
    in a task of their own, so keys work while the log is slow to answer."""
    loop = asyncio.get_running_loop()
    state = ViewState()
    async with _source(settings) as source:
        frame = await source.frame()
        reading: asyncio.Future[TopFrame] | None = None
        with _Keyboard(sys.stdin.fileno()) as keyboard, \
                Live(console=console, screen=True, auto_refresh=False,
                     redirect_stdout=False, redirect_stderr=False) as live:
            due_s = read_at_s = loop.time() + settings.refresh_s
            try:
                while not state.quit:
                    shown = frame
                    silent_s = loop.time() - read_at_s
                    if reading is not None and silent_s > max(2 * settings.refresh_s, 3.0):
                        shown = dataclasses.replace(frame, error=(
                            f"no answer for {silent_s:.0f} s (did the worker serving it stop?)"))
                    live.update(render(shown, state, width=console.width,
                                       height=console.height), refresh=True)
                    key = asyncio.ensure_future(keyboard.keys.get())
                    waiting: set[asyncio.Future[Any]] = {key}
                    if reading is not None:
                        waiting.add(reading)
                    await asyncio.wait(waiting, timeout=max(due_s - loop.time(), 0),
                                       return_when=asyncio.FIRST_COMPLETED)
                    if key.done():
                        state = apply_key(state, key.result()) if key.result() != RESIZE \
                            else state
                    else:
                        key.cancel()
                    if reading is not None and reading.done():
                        frame, reading = reading.result(), None
                    if loop.time() >= due_s:
                        due_s = loop.time() + settings.refresh_s
                        if reading is None and not state.paused:
                            reading = asyncio.ensure_future(_next_frame(source, frame))
                            read_at_s = loop.time()
            finally:
                if reading is not None:
                    reading.cancel()


async def _next_frame(source: TopSource, last: TopFrame) -> TopFrame:
    """The next frame, or the last one saying why there is none (the log went away: the
    worker that served it stopped)."""
    try:
        return await source.frame()
    except (KafkaError, TimeoutError, OSError) as error:
        reason = "timed out" if isinstance(error, TimeoutError) else str(error) or repr(error)
        if isinstance(error, KafkaConnectionError):
            reason = "no connection (did the worker serving it stop?)"
        return dataclasses.replace(last, error=reason)


def run_top(
    broker: str | None, app: str | None, refresh_s: float, once: bool, as_json: bool,
    timeout_s: float,
) -> None:
    bootstrap, name = resolve_broker(broker)
    settings = TopSettings(bootstrap, name, app, refresh_s, once or as_json, as_json, timeout_s)
    console = Console()
    if settings.once:
        run_client(_once(settings, console), bootstrap)
    elif console.is_terminal and sys.stdin.isatty():
        run_client(_interactive(settings, console), bootstrap)
    else:
        run_client(_plain(settings, console), bootstrap)
