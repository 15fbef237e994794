"""``streamer.App``: topics, agents, timers and tasks, declared with decorators::

    import streamer

    app = streamer.App("pageviews", broker="./streamer-data")
    views = app.topic("views", value_type=dict, partitions=4)
    popular = app.topic("popular", value_type=dict)

    @app.agent(views)
    async def find_popular(stream):
        async for view in stream.filter(lambda v: v["duration_ms"] > 1000):
            await popular.send(key=view["page"], value=view)

Run it with ``streamer worker module:app`` (or ``app.main()``). The broker URL is
``memory://``, a folder (default ``./streamer-data``, the embedded durable log),
``file://PATH``, or ``kafka://HOST:PORT[,...]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .agents import CURRENT_INSTANCE, Agent, ErrorPolicy
from .errors import StreamerError
from .events import Event, Headers
from .inbox import Inbox
from .timers import Crontab, Timer
from .topics import Topic

if TYPE_CHECKING:
    from .streams import Stream
    from .tables import StoreKind, Table
    from .worker import Worker

__all__ = ["PROCESSING_GUARANTEES", "App", "ProcessingGuarantee", "RecentError",
           "check_processing_guarantee"]

logger = logging.getLogger("streamer.app")

F = TypeVar("F", bound=Callable[..., Any])
RECENT_ERRORS_MAX = 100
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
PROCESSING_GUARANTEES: tuple[ProcessingGuarantee, ...] = ("at_least_once", "exactly_once")


@dataclass(frozen=True, slots=True)
class RecentError:
    source: str  # agent, timer or task name
    error: str
    where: str  # "topic[partition] offset N", or "" outside an event
    at_ms: int


class App:
    """A stream-processing app; see the module docstring."""

    def __init__(
        self,
        id: str,
        *,
        broker: str = "./streamer-data",
        commit_interval_s: float = 1.0,
        commit_every: int = 10_000,
        default_partitions: int | None = None,
        listen: str | None = "127.0.0.1:0",
        state_dir: str | None = None,
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> None:
        if not id or any(c not in _ID_CHARS for c in id):
            raise StreamerError(f"app id {id!r}: use letters, digits, '.', '_' and '-'")
        self.id = id
        # "exactly_once": each checkpoint commits what agents sent, the tables' changes and
        # the input offsets in one transaction (see streamer.worker).
        self.processing_guarantee = check_processing_guarantee(processing_guarantee)
        self.broker = broker
        self.commit_interval_s = commit_interval_s
        self.commit_every = commit_every
        self.default_partitions = default_partitions
        self.listen = listen  # where an embedded log is served (None: not at all)
        # Where table stores live; None: beside the log (<folder>/state/<app>), or
        # ./streamer-state/<app> for kafka://, or in memory for memory://.
        self.state_dir = state_dir
        self.tables: dict[str, Table] = {}
        self.topics: dict[str, Topic] = {}
        self.agents: list[Agent] = []
        self.timers: list[Timer | Crontab] = []
        self.tasks: list[Callable[[], Any]] = []
        self.extra_subscriptions: list[tuple[Topic, Inbox]] = []
        self.extra_routes: list[tuple[Topic, Callable[[int], Inbox]]] = []  # partition → inbox
        # What joins need co-partitioned (streamer/copartition.py), checked at startup.
        self.copartition_requirements: list[Any] = []
        # Each join's meter (name → an object whose snapshot() is a JoinSnapshot): what
        # statistics and streamer top show of joins.
        self.joins: dict[str, Any] = {}
        self.recent_errors: deque[RecentError] = deque(maxlen=RECENT_ERRORS_MAX)
        self.worker: Worker | None = None

    def __repr__(self) -> str:
        return f"<App {self.id} broker={self.broker}>"

    # -- declarations ---------------------------------------------------------------------

    def topic(
        self,
        name: str,
        *,
        key_type: Any = None,
        value_type: Any = bytes,
        partitions: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Topic:
        """Declare a topic (created at start if missing). ``value_type``: bytes (default),
        str, dict (JSON), a dataclass, a msgspec Struct or a pydantic model."""
        if name in self.topics:
            existing = self.topics[name]
            if value_type is not bytes and existing.value_type is not value_type:
                raise StreamerError(f"topic {name!r} declared twice with different types")
            return existing
        topic = Topic(self, name, key_type=key_type, value_type=value_type,
                      partitions=partitions or self.default_partitions, config=config)
        self.topics[name] = topic
        return topic

    def internal_topic(self, label: str, stream: Stream, *, partitions: int | None) -> Topic:
        """An app-owned topic ``<app>-<label>`` (repartitioning), typed like ``stream``,
        with as many partitions as the stream's topic unless told otherwise (so tables
        partitioned like the input stay co-partitioned after a ``group_by``)."""
        from .streams import source_topic

        name = f"{self.id}-{label}"
        if name not in self.topics:
            value_type = stream.value_type if stream.value_type is not None else bytes
            upstream = source_topic(stream)
            count = partitions or self.default_partitions or (
                upstream.partitions if upstream is not None else None
            )
            self.topics[name] = Topic(self, name, value_type=value_type, partitions=count,
                                      internal=True)
        return self.topics[name]

    def table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        store: StoreKind | None = None,
        standby_replicas: int = 0,
        source: Topic | None = None,
    ) -> Table:
        """Declare a table (see :mod:`streamer.tables`): ``default`` makes missing keys read
        as ``default()``; values are JSON unless ``value_type`` says otherwise; ``store`` is
        ``"rocksdb"`` (the default on a durable log) or ``"memory"``; ``standby_replicas``
        other workers keep a warm copy of each partition. With ``source``, the table is kept
        equal to that topic, partition by partition (see :mod:`streamer.table_sources`)."""
        if source is not None:
            return self._add_source_table(name, source, default=default, key_type=key_type,
                                          value_type=value_type, partitions=partitions,
                                          store=store, standby_replicas=standby_replicas,
                                          is_global=False)
        return self._add_table(name, default=default, key_type=key_type,
                               value_type=value_type, partitions=partitions, store=store,
                               standby_replicas=standby_replicas, is_global=False)

    def global_table(
        self,
        name: str,
        *,
        default: Callable[[], Any] | None = None,
        key_type: Any = None,
        value_type: Any = None,
        partitions: int | None = None,
        store: StoreKind | None = None,
        source: Topic | None = None,
    ) -> Table:
        """Declare a table every worker holds whole: any key can be read anywhere. With
        ``source``, that topic is the table (see :mod:`streamer.table_sources`)."""
        if source is not None:
            return self._add_source_table(name, source, default=default, key_type=key_type,
                                          value_type=value_type, partitions=partitions,
                                          store=store, standby_replicas=0, is_global=True)
        return self._add_table(name, default=default, key_type=key_type,
                               value_type=value_type, partitions=partitions, store=store,
                               standby_replicas=0, is_global=True)

    def state_table(self, name: str, *, key_type: Any, copartition_with: Topic | None) -> Table:
        """The table behind a stream operator (a windowed aggregation): made once, found
        again when the agent that declared it restarts; partitioned like
        ``copartition_with``, whatever partitions that topic turns out to have."""
        table = self.tables.get(name)
        if table is not None:
            return table
        table = self._add_table(name, default=None, key_type=key_type, value_type=None,
                                partitions=None, store=None, standby_replicas=0,
                                is_global=False, register_changelog=copartition_with is None)
        table.copartition_with = copartition_with
        return table

    def _add_source_table(self, name: str, source: Topic, **options: Any) -> Table:
        from .table_sources import keep_equal_to

        for option in ("key_type", "value_type", "partitions"):
            if options.pop(option) is not None:
                raise StreamerError(f"table {name!r}: a table with a source topic takes the "
                                    f"topic's {option}; leave {option}= out")
        table = self._add_table(name, key_type=None, value_type=None,
                                partitions=source.partitions, register_changelog=False,
                                **options)
        keep_equal_to(table, source)
        return table

    def _add_table(self, name: str, *, register_changelog: bool = True, **options: Any) -> Table:
        from .tables import Table

        if name in self.tables:
            raise StreamerError(f"table {name!r} declared twice")
        if self.worker is not None and self.worker.consuming:
            raise StreamerError(f"table {name!r}: declare tables before the worker starts")
        table = Table(self, name, **options)
        self.tables[name] = table
        # Without a partition count, the worker creates the changelog once it knows the
        # app's topics: as many partitions as the topics its agents read.
        if register_changelog and (options.get("partitions") or options.get("is_global")):
            self.topics[table.changelog_topic.name] = table.changelog_topic
        return table

    def agent(
        self,
        topic: Topic | str,
        *,
        name: str | None = None,
        concurrency: int = 1,
        sink: Sequence[Topic | Callable[[Any], Any]] = (),
        on_error: ErrorPolicy = "raise",
        retries: int = 3,
        retry_backoff_s: float = 0.1,
        retry_backoff_max_s: float = 10.0,
        then: ErrorPolicy = "raise",
        dead_letter_topic: Topic | str | None = None,
    ) -> Callable[[F], F]:
        """Run the decorated ``async def f(stream)`` over ``topic``'s events."""
        source = self.topic(topic) if isinstance(topic, str) else topic
        dead_letter = (
            self.topic(dead_letter_topic) if isinstance(dead_letter_topic, str)
            else dead_letter_topic
        )

        def register(fn: F) -> F:
            agent_name = name or fn.__name__
            if any(existing.name == agent_name for existing in self.agents):
                raise StreamerError(f"two agents named {agent_name!r}: pass name=...")
            self.agents.append(Agent(
                self, fn, source, name=agent_name, concurrency=concurrency, sink=sink,
                on_error=on_error, retries=retries, retry_backoff_s=retry_backoff_s,
                retry_backoff_max_s=retry_backoff_max_s, then=then,
                dead_letter_topic=dead_letter,
            ))
            return fn

        return register

    def timer(self, interval_s: float, *, on_leader: bool = False) -> Callable[[F], F]:
        """Run the decorated ``async def f()`` every ``interval_s`` seconds; with
        ``on_leader`` only on one worker of the app."""

        def register(fn: F) -> F:
            self.timers.append(Timer(fn, interval_s, on_leader=on_leader))
            return fn

        return register

    def crontab(
        self, schedule: str, *, timezone: str | None = None, on_leader: bool = False
    ) -> Callable[[F], F]:
        """Run the decorated ``async def f()`` on a cron schedule (croniter syntax), in
        ``timezone`` (an IANA name; default UTC)."""

        def register(fn: F) -> F:
            self.timers.append(Crontab(fn, schedule, timezone=timezone, on_leader=on_leader))
            return fn

        return register

    def task(self, fn: F) -> F:
        """Run the decorated ``async def f()`` once when the worker starts."""
        self.tasks.append(fn)
        return fn

    # -- used while running ---------------------------------------------------------------

    def subscribe(self, topic: Topic) -> Inbox:
        """An inbox fed with ``topic``'s events (streams of extra topics, repartitioning).

        In an agent, instance ``i`` of ``n`` is fed the partitions ``p % n == i``, as with
        the agent's own topic, and an instance restarted after an error gets its inbox back,
        so its stream resumes where it was."""
        instance = CURRENT_INSTANCE.get()
        key = instance.subscription_key(topic.name) if instance is not None else None
        if instance is not None and key is not None and key in instance.agent.extra_inboxes:
            return instance.agent.extra_inboxes[key][instance.index]
        if self.worker is not None and self.worker.consuming:
            raise StreamerError(
                f"topic {topic.name!r} was first read after the worker started consuming: "
                "build streams (merge, group_by, through) before awaiting anything else"
            )
        count = 1 if instance is None else instance.agent.concurrency
        inboxes = [Inbox(f"{topic.name}[{i}]") for i in range(count)]
        self.extra_subscriptions.extend((topic, inbox) for inbox in inboxes)
        self.extra_routes.append((topic, _route_to(inboxes)))
        if instance is None or key is None:
            return inboxes[0]
        instance.agent.extra_inboxes[key] = inboxes
        return inboxes[instance.index]

    async def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int | None,
        partition: int | None,
    ) -> None:
        worker = self.worker
        if worker is None:
            raise StreamerError(f"{self.id}: sending needs a running worker (app.main())")
        await worker.send(topic, key, value, headers, timestamp_ms, partition)

    def record_error(self, source: str, error: BaseException, event: Event | None) -> None:
        import time

        where = f"{event.topic}[{event.partition}] offset {event.offset}" if event else ""
        self.recent_errors.append(RecentError(
            source, f"{type(error).__name__}: {error}", where, int(time.time() * 1000)
        ))

    # -- running --------------------------------------------------------------------------

    async def run(self, *, broker: str | None = None, stop: asyncio.Event | None = None) -> None:
        """Run a worker of this app until ``stop`` is set (or an agent fails)."""
        from .worker import Worker

        await Worker(self, broker=broker or self.broker).run(stop=stop)

    def main(self) -> None:
        """Run a worker from ``python app.py``; stops on SIGTERM or Ctrl-C."""
        from .worker import run_worker

        run_worker(self)


def check_processing_guarantee(value: object) -> ProcessingGuarantee:
    """``value`` if it is one of :data:`PROCESSING_GUARANTEES`, else a clear error."""
    for guarantee in PROCESSING_GUARANTEES:
        if value == guarantee:
            return guarantee
    raise StreamerError(
        f"processing_guarantee is 'at_least_once' or 'exactly_once', not {value!r}"
    )


def _route_to(inboxes: list[Inbox]) -> Callable[[int], Inbox]:
    def route(partition: int) -> Inbox:
        return inboxes[partition % len(inboxes)]

    return route


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
