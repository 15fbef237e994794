"""Exactly-once processing: the worker's checkpoints as transactions
(``App(processing_guarantee="exactly_once")``).

The worker keeps one transactional producer (its transport, made transactional at start) with
a transactional id that is stable across restarts of the same worker on the same machine:
``<app>-<host>-<n>-<random>``, kept in the worker's state slot (``worker-<n>``, see
:mod:`streamer.changelogs`). A restarted worker's first request therefore aborts whatever
transaction its killed predecessor left open, at once, and fences that predecessor.

A transaction begins at the first send after a commit (an agent's output, a dead letter, a
timer's send) and ends at the next checkpoint:

1. every stream is held between two events (no event half processed);
2. the committable offsets and the tables' changed keys are taken, the changes go to the
   changelogs, and the transport seals the transaction: what is sent from then on (by
   agents, timers, tasks) belongs to the next one, and waits in memory until this one is
   committed;
3. the streams go on, while the transport commits: its batches, then the offsets as the
   consumer group's (with the group's generation and member id where the transport
   carries them, so a worker whose partitions moved cannot commit them), then the
   transaction itself;
4. only then do the stores record the changes, at the changelog offsets the commit made
   visible: a store is never ahead of its committed changelog.

Failures:

- :class:`~streamer.transport.TransactionAbortedError` (a write refused, a coordinator
  error): the streams are held again, the transaction is aborted (with what the next one
  had gathered), every batch delivered since the last commit is dropped,
  the consumer goes back to the committed offsets, the tables' caches to their stores, and
  the work is done again. :data:`ABORTS_IN_A_ROW_MAX` aborts without a commit between them
  stop the worker (a record too large would otherwise be retried forever).
- :class:`~streamer.transport.TransactionFencedError` (a newer worker with the same id, or
  the group moved the partitions away, or the transaction timed out and the coordinator
  aborted it): the worker never writes again. It drops its uncommitted table changes and
  stops with that error; ``streamer worker`` exits with one ``Error:`` line. A restart
  resumes from the committed state.
- An agent that fails under the ``raise`` policy: the worker aborts the open transaction
  (the failed event's partial output included) and stops; a restart replays it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import StreamerError
from .events import TopicPartition
from .transport import TransactionAbortedError, TransactionFencedError

if TYPE_CHECKING:
    from .worker import Worker

__all__ = [
    "ABORTS_IN_A_ROW_MAX",
    "TRANSACTIONAL_ID_FILE",
    "ExactlyOnce",
    "transactional_id",
]

logger = logging.getLogger("streamer.worker")

# Aborted transactions in a row, without a commit between them, before the worker stops:
# an abort that comes back on every replay (a record the log refuses) is not transient.
ABORTS_IN_A_ROW_MAX = 5
TRANSACTIONAL_ID_FILE = "transactional-id"


class ExactlyOnce:
    """One worker's transactions: see the module docstring."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.transactional_id = ""
        self.commits = 0
        self.aborts = 0
        self.fenced = False
        self._aborts_in_a_row = 0
        # Per partition, where a replay starts: the last committed offset, or the first
        # offset fetched since the partition was assigned.
        self._replay_from: dict[TopicPartition, int] = {}

    async def start(self, state_path: str | None) -> None:
        """Make the transport transactional; aborts a predecessor's open transaction."""
        transport = self.worker.transport
        assert transport is not None
        self.transactional_id = transactional_id(self.worker.app.id, state_path)
        try:
            await transport.init_transactions(self.transactional_id)
        except TransactionFencedError as error:
            self.fenced = True
            raise StreamerError(f"{error}; another worker with this state folder runs") from error
        logger.info("exactly-once: transactional id %s", self.transactional_id)

    # -- what the worker tells it -----------------------------------------------------------

    def fetched(self, partition: TopicPartition, first_offset: int) -> None:
        """A batch of ``partition`` from ``first_offset`` was fetched for delivery."""
        self._replay_from.setdefault(partition, first_offset)

    def forget(self, partitions: frozenset[TopicPartition]) -> None:
        """Partitions revoked: the next owner replays them from the committed offsets."""
        for partition in partitions:
            self._replay_from.pop(partition, None)

    # -- checkpoints ----------------------------------------------------------------------

    async def checkpoint(
        self, while_held: Callable[[], None] | None = None, *, wait_s: float | None = None
    ) -> None:
        """Commit the transaction (see the module docstring), or abort it and replay.
        ``while_held`` runs once the transaction is sealed, before the streams go on (a
        revocation drops the revoked partitions' queued batches there). ``wait_s``: how
        long to wait for agents to finish their event (None: as long as it takes); past it
        the transaction aborts (the worker is stopping: nothing is replayed)."""
        worker = self.worker
        transport, consumer = worker.transport, worker.consumer
        assert transport is not None
        async with worker.streams_held(wait_s) as settled:
            try:
                if self.fenced or worker.failed():
                    return  # never commit beside a failed event; the shutdown aborts
                if not settled:
                    await self.abort(f"agents still mid-event after {wait_s} s")
                    return
                offsets, changes = worker.take_checkpoint()
                await worker.tables.send(changes)
                transport.seal_transaction()  # what is sent from now on is the next one's
            finally:
                if while_held is not None:
                    while_held()
        try:
            await transport.commit_transaction(offsets, consumer)
        except TransactionAbortedError as error:
            async with worker.streams_held(None):  # undo with nothing half done
                await self._abort_and_replay(error)
            return
        except TransactionFencedError as error:
            self._fence(error)
            return
        self.commits += 1
        self._aborts_in_a_row = 0
        self._replay_from.update(offsets)
        worker.committed(offsets)
        await worker.tables.write(changes)  # after the commit: stores never run ahead

    async def abort(self, reason: str) -> None:
        """Abort the open transaction without replaying (the worker is stopping)."""
        if self.fenced:
            return
        transport = self.worker.transport
        assert transport is not None
        try:
            await transport.abort_transaction()
        except TransactionFencedError as error:
            self._fence(error)
            return
        logger.info("exactly-once: the open transaction is aborted (%s)", reason)
        self.worker.tables.drop_uncommitted()

    async def _abort_and_replay(self, error: TransactionAbortedError) -> None:
        worker = self.worker
        self.aborts += 1
        self._aborts_in_a_row += 1
        transport = worker.transport
        assert transport is not None
        try:
            await transport.abort_transaction()
        except TransactionFencedError as fenced:
            self._fence(fenced)
            return
        worker.replay(dict(self._replay_from))
        if self._aborts_in_a_row >= ABORTS_IN_A_ROW_MAX:
            failure = StreamerError(
                f"{self._aborts_in_a_row} transactions aborted in a row, the last because: "
                f"{error}; stopping (the committed state is intact: a restart replays)"
            )
            failure.__cause__ = error
            worker.fail(failure)
            return
        logger.warning("exactly-once: transaction aborted (%s); replaying from the last "
                       "commit", error)

    def _fence(self, error: TransactionFencedError) -> None:
        """Never write again: drop what was not committed and stop the worker."""
        self.fenced = True
        self.worker.tables.drop_uncommitted()
        failure = StreamerError(
            f"{error}; this worker stops without writing anything more (its uncommitted work "
            "is dropped; whoever fenced it carries on from the last commit)"
        )
        failure.__cause__ = error
        self.worker.fail(failure)


def transactional_id(app_id: str, state_path: str | None) -> str:
    """``<app>-<host>-<slot>-<random>``, kept in the state slot's folder so a restarted
    worker gets its predecessor's id (and fences it); without a state folder (``memory://``)
    one of its own per process."""
    host = socket.gethostname().split(".")[0] or "localhost"
    if state_path is None:
        return f"{app_id}-{host}-{os.getpid()}-{secrets.token_hex(4)}"
    path = os.path.join(state_path, TRANSACTIONAL_ID_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            found = file.read().strip()
        if found:
            return found
    except FileNotFoundError:
        pass
    slot = os.path.basename(os.path.normpath(state_path)).removeprefix("worker-")
    made = f"{app_id}-{host}-{slot}-{secrets.token_hex(4)}"
    os.makedirs(state_path, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(made + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return made
