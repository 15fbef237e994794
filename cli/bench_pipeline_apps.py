"""The pipelines that ``streamer bench pipeline`` runs, one per child process::

    python -m streamer.cli.bench_pipeline_apps '{"framework": "quixstreams", ...}'

Each decodes the JSON page views of the input topic, keeps the ones with ``duration_ms ≥
threshold_ms`` (:func:`keep`), reshapes them (:func:`reshape`) and sends them, keyed by user,
to the output topic. All four call the same two functions, so they do the same work:

streamer-embedded  ``streamer.App(broker=<folder>, listen=None)``, the log in this process
streamer-kafka     the same app with ``broker=kafka://HOST:PORT`` (``streamer broker``)
quixstreams        ``app.dataframe(topic).filter(keep).apply(reshape).to_topic(out)``
faust              an agent, ``stream.filter(keep)`` and ``await out.send(...)``

A child imports its framework and builds its app first, then prints a ``start`` line with
:func:`time.monotonic` (one clock for every process of the machine) and runs the app until
SIGTERM. The harness watches the output topic and stops it; streamer-embedded, whose log
nobody else can open while it runs, watches its own output topic and stops itself, printing
when every output was visible (appended) and when it was durable (fsynced). Lines for the
harness start with :data:`MARK`; everything else a framework prints goes to the run's log.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from streamer import App

__all__ = [
    "MARK", "PIPELINES", "ChildSettings", "JsonSettings", "keep", "main", "reshape",
    "run_child", "run_quix", "run_until_stopped", "streamer_app", "tell",
]

MARK = "streamer-bench "
PIPELINES = ("streamer-embedded", "streamer-kafka", "quixstreams", "faust")
WATCH_INTERVAL_S = 0.005  # streamer-embedded: how often it reads its output's end offsets
STALL_S_MAX = 60.0  # streamer-embedded: no new output for this long and it gives up
APP_ID = "bench-pipeline"
THRESHOLD_MS = 1000  # what keep() sets apart; the events' durations are 0–1999 ms


class JsonSettings:
    """A child's settings, a slotted dataclass: JSON on its command line."""

    __slots__ = ()

    def to_json(self) -> str:
        names: tuple[str, ...] = self.__slots__  # the dataclass's fields
        return json.dumps({name: getattr(self, name) for name in names})

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls(**json.loads(text))


@dataclass(frozen=True, slots=True)
class ChildSettings(JsonSettings):
    framework: str  # one of PIPELINES
    bootstrap: str  # host:port of `streamer broker`, or the log folder for streamer-embedded
    input_topic: str
    output_topic: str
    partitions: int
    expected: int  # outputs a run must produce
    state_dir: str  # quixstreams' and faust's own folders
    profile_path: str | None  # write a cProfile of the run there


def keep(view: dict[str, Any]) -> bool:
    return bool(view["duration_ms"] >= THRESHOLD_MS)


def reshape(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": view["user"], "page": view["page"], "seconds": view["duration_ms"] / 1000,
        "n": view["n"],
    }


def tell(**fields: Any) -> None:
    """One line for the harness."""
    sys.stdout.write(MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


# -- streamer ------------------------------------------------------------------------------


def streamer_app(broker: str, settings: ChildSettings) -> App:
    import streamer

    app = streamer.App(APP_ID, broker=broker, listen=None)
    views = app.topic(settings.input_topic, value_type=dict, partitions=settings.partitions)
    kept = app.topic(settings.output_topic, value_type=dict, partitions=settings.partitions)

    @app.agent(views)
    async def pipeline(stream: streamer.Stream) -> None:
        async for view in stream.filter(keep).map(reshape):
            await kept.send(key=view["user"], value=view)

    return app


def run_streamer(settings: ChildSettings) -> None:
    embedded = settings.framework == "streamer-embedded"
    app = streamer_app(streamer_broker(settings), settings)
    preload()
    run_until_stopped(app, settings, (lambda stop: _watch_embedded(app, settings, stop))
                      if embedded else None)


def streamer_broker(settings: Any) -> str:
    """The app's ``broker``: the log folder for streamer-embedded, else kafka://HOST:PORT."""
    embedded = settings.framework == "streamer-embedded"
    return str(settings.bootstrap if embedded else f"kafka://{settings.bootstrap}")


def preload(*modules: str) -> None:
    """App.run imports these on first use (~0.5 s): before the clock, as for the peers."""
    import importlib

    for module in ("streamer.worker", "streamer.transport.embedded", "streamer.transport.kafka",
                   *modules):
        importlib.import_module(module)


def run_until_stopped(
    app: App, settings: Any, watch: Callable[[asyncio.Event], Awaitable[None]] | None,
) -> None:
    """Say ``start`` and run ``app`` until SIGTERM or SIGINT, or until ``watch(stop)``
    (in a task beside it) sets ``stop``. The process is set up as ``streamer worker`` sets
    up its own (:func:`streamer.worker.tune_gc`)."""
    from streamer.worker import tune_gc

    tune_gc()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        watcher = None if watch is None else asyncio.ensure_future(watch(stop))
        tell(start=time.monotonic())
        try:
            await app.run(stop=stop)
        finally:
            if watcher is not None:
                watcher.cancel()

    _profiled(settings, lambda: asyncio.run(main()))


async def _watch_embedded(app: App, settings: ChildSettings, stop: asyncio.Event) -> None:
    """Read the output partitions' end offsets in this process until every output is
    visible (the high watermark: what a consumer can read), then durable; stop the app."""
    from streamer.transport.embedded import EmbeddedTransport

    while app.worker is None or not app.worker.consuming:  # the log is open, topics made
        await asyncio.sleep(WATCH_INTERVAL_S)
    transport = app.worker.transport
    assert isinstance(transport, EmbeddedTransport)
    partitions = [transport.log.partition(settings.output_topic, p)
                  for p in range(settings.partitions)]
    first_at = visible_at = None
    last, progress_at = 0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(WATCH_INTERVAL_S)
        now = time.monotonic()
        visible = sum(p.high_watermark for p in partitions)
        if visible != last:
            last, progress_at = visible, now
            if first_at is None:
                first_at = now
                tell(first=now)
        if visible >= settings.expected and visible_at is None:
            visible_at = now
            tell(done=now, outputs=visible)
        if visible_at is not None and sum(p.durable_offset for p in partitions) >= visible:
            tell(durable=now)
            stop.set()
        elif now - progress_at > STALL_S_MAX:
            tell(failed=f"{visible} of {settings.expected} outputs, none new in {STALL_S_MAX} s")
            stop.set()


# -- quixstreams ---------------------------------------------------------------------------


def run_quixstreams(settings: ChildSettings) -> None:
    run_quix(settings, APP_ID, settings.input_topic, lambda sdf: sdf.filter(keep).apply(reshape))


def run_quix(
    settings: Any, app_id: str, input_topic: str, build: Callable[[Any], Any], *,
    processing_guarantee: Literal["at-least-once", "exactly-once"] = "at-least-once",
) -> None:
    """A quixstreams app, group ``app_id``, from ``input_topic`` (JSON) through
    ``build(dataframe)`` to the output topic; says ``start`` and runs until SIGTERM."""
    from quixstreams import Application

    app = Application(
        broker_address=settings.bootstrap, consumer_group=app_id,
        auto_offset_reset="earliest", state_dir=os.path.join(settings.state_dir, "quix"),
        loglevel="WARNING", processing_guarantee=processing_guarantee,
    )
    views = app.topic(input_topic, value_deserializer="json")
    out = app.topic(settings.output_topic, value_serializer="json")
    build(app.dataframe(views)).to_topic(out)  # keyed like the input event: by user
    tell(start=time.monotonic())
    _profiled(settings, app.run)  # stops on SIGTERM


# -- faust ---------------------------------------------------------------------------------


def run_faust(settings: ChildSettings) -> None:
    import faust
    from faust.worker import Worker

    app = faust.App(
        APP_ID, broker=f"kafka://{settings.bootstrap}", store="memory://",
        datadir=os.path.join(settings.state_dir, "faust"), web_enabled=False,
        topic_partitions=settings.partitions,
    )
    views = app.topic(settings.input_topic, value_serializer="json", key_serializer="raw")
    kept = app.topic(settings.output_topic, value_serializer="json", key_serializer="raw")

    @app.agent(views)
    async def pipeline(stream: Any) -> None:
        async for view in stream.filter(keep):
            shaped = reshape(view)
            await kept.send(key=shaped["user"], value=shaped)

    worker = Worker(app, loglevel="warning", quiet=True)
    tell(start=time.monotonic())
    _profiled(settings, worker.execute_from_commandline)  # stops on SIGTERM


# -- the child -----------------------------------------------------------------------------


def _profiled(settings: Any, body: Callable[[], object]) -> None:
    if settings.profile_path is None:
        body()
        return
    profile = cProfile.Profile()
    try:
        profile.runcall(body)
    finally:
        profile.dump_stats(settings.profile_path)


RUNNERS: dict[str, Callable[[ChildSettings], None]] = {
    "streamer-embedded": run_streamer,
    "streamer-kafka": run_streamer,
    "quixstreams": run_quixstreams,
    "faust": run_faust,
}


def main(argv: list[str]) -> None:
    run_child(argv, "streamer.cli.bench_pipeline_apps", ChildSettings, RUNNERS)


def run_child(
    argv: list[str], module: str, settings_type: type[JsonSettings],
    runners: dict[str, Callable[[Any], None]],
) -> None:
    """``python -m module SETTINGS_JSON``: run the settings' framework, then say ``stopped``."""
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m {module} SETTINGS_JSON")
    settings: Any = settings_type.from_json(argv[0])
    runners[settings.framework](settings)
    tell(stopped=time.monotonic())


if __name__ == "__main__":
    main(sys.argv[1:])
