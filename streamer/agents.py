"""Agents: ``async def f(stream)`` functions that the worker runs over a topic.

Each agent runs ``concurrency`` instances; the worker hands each instance the batches of
the partitions it serves (partition ``p`` goes to instance ``p % concurrency``, so events of
one partition stay in order). An agent written as an async generator sends what it yields to
its sinks.

When an agent raises, its ``on_error`` policy decides, and the error is logged with the
topic, partition and offset of the event being processed:

- ``"raise"`` (default): stop the worker with the error;
- ``"skip"``: log it and go on with the next event;
- ``"dead_letter"``: send the event, with the error in its headers, to the dead-letter topic
  (``<app>-<agent>-dead-letter`` unless named), then go on;
- ``"retry"``: run the same event again after a backoff (doubling from ``retry_backoff_s``
  up to ``retry_backoff_max_s``), at most ``retries`` times, then fall back to
  ``then`` (``"raise"``, ``"skip"`` or ``"dead_letter"``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import StreamerError
from .events import Event
from .inbox import Inbox
from .streams import PROCESSING, EventTracker, InboxSource, Stream

if TYPE_CHECKING:
    from .app import App
    from .topics import Topic

__all__ = ["CURRENT_INSTANCE", "Agent", "AgentError", "AgentInstance", "AgentStatistics",
           "ErrorPolicy"]

logger = logging.getLogger("streamer.agents")

ErrorPolicy = Literal["raise", "skip", "dead_letter", "retry"]
POLICIES = ("raise", "skip", "dead_letter", "retry")


class AgentError(StreamerError):
    """An agent raised and its policy is ``raise``: the worker stops with this error."""


@dataclass(slots=True)
class AgentInstance:
    """The agent instance running in this task: the streams it builds subscribe for it."""

    agent: Agent
    index: int
    built: dict[str, int] = field(default_factory=dict)  # topic → its streams built this run

    def subscription_key(self, topic: str) -> tuple[str, int]:
        """``(topic, n)`` for the n-th stream of ``topic`` this run of the agent builds: the
        same key after a restart, so the instance gets its inbox back."""
        ordinal = self.built.get(topic, 0)
        self.built[topic] = ordinal + 1
        return topic, ordinal

    def serves(self, partition: int) -> bool:
        """Whether this instance reads ``partition`` (instance ``i`` of ``n`` reads the
        partitions ``p % n == i``)."""
        return partition % self.agent.concurrency == self.index


CURRENT_INSTANCE: ContextVar[AgentInstance | None] = ContextVar(
    "streamer_agent_instance", default=None
)


@dataclass(frozen=True, slots=True)
class AgentStatistics:
    name: str
    topic: str
    concurrency: int
    events_in: int
    events_out: int
    errors: int


class Agent:
    def __init__(
        self,
        app: App,
        fn: Callable[[Stream], Any],
        topic: Topic,
        *,
        name: str,
        concurrency: int,
        sink: Sequence[Topic | Callable[[Any], Any]],
        on_error: ErrorPolicy,
        retries: int,
        retry_backoff_s: float,
        retry_backoff_max_s: float,
        then: ErrorPolicy,
        dead_letter_topic: Topic | None,
    ) -> None:
        if on_error not in POLICIES or then not in ("raise", "skip", "dead_letter"):
            raise StreamerError(f"agent {name}: on_error is one of {POLICIES}")
        if concurrency < 1:
            raise StreamerError(f"agent {name}: concurrency must be ≥ 1")
        self.app = app
        self.fn = fn
        self.topic = topic
        self.name = name
        self.concurrency = concurrency
        self.sink = list(sink)
        self.on_error = on_error
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.then = then
        self.dead_letter_topic = dead_letter_topic
        self.inboxes = [Inbox(f"{name}[{i}]") for i in range(concurrency)]
        # Inboxes of the other topics its streams read (merge, group_by, through), one per
        # instance, by App.subscribe: (topic, n) → the inbox of each instance.
        self.extra_inboxes: dict[tuple[str, int], list[Inbox]] = {}
        self.events_out = 0
        self.errors = 0
        self.is_generator = inspect.isasyncgenfunction(fn)
        if not (self.is_generator or inspect.iscoroutinefunction(fn)):
            raise StreamerError(f"agent {name}: expected an async def function")

    def __repr__(self) -> str:
        return f"<Agent {self.name} on {self.topic.name}>"

    def inbox_for(self, partition: int) -> Inbox:
        return self.inboxes[partition % self.concurrency]

    def statistics(self) -> AgentStatistics:
        return AgentStatistics(
            self.name, self.topic.name, self.concurrency,
            sum(inbox.events_in for inbox in self.inboxes), self.events_out, self.errors,
        )

    # -- running --------------------------------------------------------------------------

    async def run_instance(self, index: int) -> None:
        """Run instance ``index`` until cancelled; errors go through the policy."""
        inbox = self.inboxes[index]
        instance = AgentInstance(self, index)
        CURRENT_INSTANCE.set(instance)
        tracker = EventTracker()
        PROCESSING.set(tracker)
        failures = 0  # consecutive failures on the same event, for retry
        last_failed: tuple[str, int, int] | None = None
        while True:
            instance.built.clear()
            tracker.event = None
            stream = Stream(self.app, InboxSource(inbox), value_type=self.topic.value_type)
            try:
                await self._run_once(stream)
                return  # the agent function returned: it is done
            except asyncio.CancelledError:
                raise
            except Exception as error:
                event = tracker.event
                where = (event.topic, event.partition, event.offset) if event else None
                failures = failures + 1 if where is not None and where == last_failed else 1
                last_failed = where
                await self._handle(error, event, index, failures)

    async def _run_once(self, stream: Stream) -> None:
        if not self.is_generator:
            await self.fn(stream)
            return
        async for result in self.fn(stream):
            event = stream.current_event
            for target in self.sink:
                await self._send_to_sink(target, result, event)
            self.events_out += 1

    async def _send_to_sink(
        self, target: Topic | Callable[[Any], Any], value: Any, event: Event | None
    ) -> None:
        from .topics import Topic

        if isinstance(target, Topic):
            await target.send(key=event.key if event else None, value=value)
        else:
            outcome = target(value)
            if inspect.isawaitable(outcome):
                await outcome

    async def _handle(
        self, error: Exception, event: Event | None, index: int, failures: int
    ) -> None:
        from .tables import PartitionRevokedError

        if isinstance(error, PartitionRevokedError):  # the new owner processes it again
            logger.debug("agent %s: %s; event skipped", self.name, error)
            return
        self.errors += 1
        self.app.record_error(self.name, error, event)
        where = (
            f"{event.topic}[{event.partition}] offset {event.offset}" if event else "no event"
        )
        policy = self.on_error
        if policy == "retry":
            if event is not None and failures <= self.retries and self._rewind(event, index):
                delay = min(self.retry_backoff_s * 2 ** (failures - 1), self.retry_backoff_max_s)
                logger.warning("agent %s failed on %s (%s: %s); retry %d of %d in %.2fs",
                               self.name, where, type(error).__name__, error, failures,
                               self.retries, delay)
                await asyncio.sleep(delay)
                return
            policy = self.then
        if policy == "raise" or event is None:
            raise AgentError(
                f"agent {self.name} failed on {where}: {type(error).__name__}: {error}"
            ) from error
        if policy == "dead_letter":
            await self._dead_letter(error, event)
            logger.warning("agent %s failed on %s (%s: %s); sent to %s", self.name, where,
                           type(error).__name__, error, self._dead_letter_name())
            return
        logger.warning("agent %s failed on %s (%s: %s); skipped", self.name, where,
                       type(error).__name__, error)

    def _rewind(self, event: Event, index: int) -> bool:
        """Put ``event`` back in front of the inbox it came from, to run it again; False if
        no inbox of instance ``index`` has it last (a branch's copy, say)."""
        inboxes = [self.inboxes[index], *(group[index] for group in self.extra_inboxes.values())]
        for inbox in inboxes:
            if inbox.index > 0 and inbox.batch[inbox.index - 1] is event:
                inbox.index -= 1
                return True
        return False

    def _dead_letter_name(self) -> str:
        topic = self.dead_letter_topic
        return topic.name if topic is not None else f"{self.app.id}-{self.name}-dead-letter"

    async def _dead_letter(self, error: Exception, event: Event) -> None:
        headers = (
            *event.headers,
            ("streamer.error", f"{type(error).__name__}: {error}".encode()),
            ("streamer.error.trace", "".join(traceback.format_exception(error))[-4000:].encode()),
            ("streamer.source", f"{event.topic}/{event.partition}/{event.offset}".encode()),
            ("streamer.agent", self.name.encode()),
            ("streamer.failed_at_ms", str(int(time.time() * 1000)).encode()),
        )
        await self.app.send_raw(self._dead_letter_name(), event.raw_key, event.raw_value,
                                headers, event.timestamp, None)
