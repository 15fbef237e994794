"""A test consumer that drives the coordinator the way Kafka clients do.

It keeps its member id and generation between calls, rejoins with the id it is given on
MEMBER_ID_REQUIRED (JoinGroup v4+), and exposes each step so tests can interleave them.
``simple_commit`` commits as a consumer outside group management (``assign()``) does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from streamer.log.groups import GroupCoordinator, JoinResult, SyncResult
from streamer.log.protocol.error_codes import ErrorCode

T = TypeVar("T")

GROUP = "group"
PROTOCOLS = (("range", b"range-metadata"),)
SESSION_TIMEOUT_MS = 10_000
REBALANCE_TIMEOUT_MS = 10_000
SIMPLE = (-1, "", None)  # generation, member id, instance id of a consumer using assign()


def run(scenario: Awaitable[T]) -> T:
    """Run one test scenario on a fresh event loop (pytest-asyncio is not used)."""

    async def bounded() -> T:  # a hung rebalance fails the test instead of the suite
        return await asyncio.wait_for(scenario, timeout=5)

    return asyncio.run(bounded())


class Consumer:
    def __init__(
        self,
        coordinator: GroupCoordinator,
        name: str,
        *,
        group_id: str = GROUP,
        protocols: Sequence[tuple[str, bytes]] = PROTOCOLS,
        protocol_type: str = "consumer",
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: int = REBALANCE_TIMEOUT_MS,
        group_instance_id: str | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.name = name
        self.group_id = group_id
        self.protocols = list(protocols)
        self.protocol_type = protocol_type
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.group_instance_id = group_instance_id
        self.member_id = ""
        self.generation_id = -1
        self.joined: JoinResult | None = None

    async def join_once(self, *, require_known_member_id: bool = True) -> JoinResult:
        result = await self.coordinator.join_group(
            self.group_id,
            self.member_id,
            self.group_instance_id,
            self.protocol_type,
            self.protocols,
            self.session_timeout_ms,
            self.rebalance_timeout_ms,
            self.name,
            "/127.0.0.1",
            require_known_member_id,
        )
        if result.error_code in (ErrorCode.NONE, ErrorCode.MEMBER_ID_REQUIRED):
            self.member_id = result.member_id
        if result.error_code is ErrorCode.NONE:
            self.generation_id = result.generation_id
            self.joined = result
        return result

    async def join(self) -> JoinResult:
        """Join as a JoinGroup v4+ client: a second call when the id is required."""
        result = await self.join_once()
        if result.error_code is ErrorCode.MEMBER_ID_REQUIRED:
            result = await self.join_once()
        assert result.error_code is ErrorCode.NONE, result
        return result

    @property
    def is_leader(self) -> bool:
        return self.joined is not None and self.joined.leader_id == self.member_id

    async def sync(self, assignments: Sequence[tuple[str, bytes]] = ()) -> SyncResult:
        return await self.coordinator.sync_group(
            self.group_id,
            self.generation_id,
            self.member_id,
            self.group_instance_id,
            self.protocol_type,
            None,
            assignments,
        )

    def heartbeat(self) -> ErrorCode:
        return self.coordinator.heartbeat(
            self.group_id, self.generation_id, self.member_id, self.group_instance_id
        )

    def leave(self) -> ErrorCode:
        result = self.coordinator.leave_group(
            self.group_id, [(self.member_id, self.group_instance_id)]
        )
        assert result.error_code is ErrorCode.NONE, result
        return result.members[0].error_code

    async def commit(self, topic: str, partition: int, offset: int) -> ErrorCode:
        (result,) = await self.coordinator.commit_offsets(
            self.group_id,
            self.generation_id,
            self.member_id,
            self.group_instance_id,
            [(topic, partition, offset, -1, None)],
        )
        return result.error_code


async def form_group(consumers: Sequence[Consumer]) -> dict[str, bytes]:
    """Join everyone in one rebalance and sync; the leader assigns each its own name.

    Returns each consumer's assignment by name. The coordinator must have an initial
    rebalance delay (or the consumers must all be rejoining) so the joins meet.
    """
    await asyncio.gather(*(consumer.join() for consumer in consumers))
    generations = {consumer.generation_id for consumer in consumers}
    assert len(generations) == 1, generations
    (leader,) = [consumer for consumer in consumers if consumer.is_leader]
    followers = [consumer for consumer in consumers if consumer is not leader]
    plan = [(consumer.member_id, consumer.name.encode()) for consumer in consumers]
    # Followers first: they wait in SyncGroup until the leader's assignment arrives.
    synced = await asyncio.gather(*(c.sync() for c in followers), leader.sync(plan))
    assert all(result.error_code is ErrorCode.NONE for result in synced), synced
    ordered = [*followers, leader]
    return {c.name: result.assignment for c, result in zip(ordered, synced, strict=True)}



async def simple_commit(
    groups: GroupCoordinator, group_id: str, *offsets: tuple[str, int, int]
) -> list[ErrorCode]:
    results = await groups.commit_offsets(
        group_id, *SIMPLE, [(topic, p, offset, -1, None) for topic, p, offset in offsets]
    )
    return [result.error_code for result in results]


def fetched(groups: GroupCoordinator, group_id: str = GROUP) -> dict[tuple[str, int], int]:
    result = groups.fetch_offsets(group_id, None)
    assert result.error_code is ErrorCode.NONE
    return {(o.topic, o.partition): o.offset for o in result.partitions}
