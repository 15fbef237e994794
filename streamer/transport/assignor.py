"""The ``streamer`` assignor: co-partitioned assignments with standby partitions.

Kafka's round-robin and range assignors deal each topic's partitions on their own, so a
worker may own ``orders[3]`` while another owns ``orders-count-changelog[3]``. A table and
the stream that updates it must meet on one worker, so this assignor deals *partition
numbers*: partition ``p`` of every subscribed topic goes to the same member, the
``p % members``-th by member id (topics with fewer partitions, such as the app's one-partition
leader topic, simply have fewer numbers).

It also picks standby replicas: with ``standby_replicas=k`` (the largest any member asks
for in its subscription's user data), partition number ``p`` is kept warm by the ``k``
members after its owner. The member learns its standby numbers from its assignment's user
data, and the worker tails those changelog partitions into local stores.

Both transports use it: the embedded group member (the same encoding) and aiokafka, through
:class:`CopartitionedAssignor`, so embedded and remote workers share one group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from ..events import TopicPartition

__all__ = [
    "ASSIGNOR_NAME",
    "CopartitionedAssignor",
    "Subscription",
    "assign_copartitioned",
    "decode_assignment_user_data",
    "decode_subscription_user_data",
    "encode_assignment_user_data",
    "encode_subscription_user_data",
]

ASSIGNOR_NAME = "streamer"

Subscription = tuple[Sequence[str], int]  # subscribed topics, standby replicas wanted


def encode_subscription_user_data(standby_replicas: int) -> bytes:
    return orjson.dumps({"standby_replicas": standby_replicas})


def decode_subscription_user_data(user_data: bytes | None) -> int:
    """The standby replicas a member asks for; 0 for bytes that are not ours."""
    try:
        wanted = orjson.loads(user_data or b"{}").get("standby_replicas", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return wanted if isinstance(wanted, int) and wanted >= 0 else 0


def encode_assignment_user_data(standby: Iterable[int]) -> bytes:
    return orjson.dumps({"standby": sorted(standby)})


def decode_assignment_user_data(user_data: bytes | None) -> frozenset[int]:
    try:
        standby = orjson.loads(user_data or b"{}").get("standby", [])
    except (orjson.JSONDecodeError, AttributeError):
        return frozenset()
    return frozenset(p for p in standby if isinstance(p, int))


def assign_copartitioned(
    subscriptions: Mapping[str, Subscription], partition_count: Callable[[str], int]
) -> dict[str, tuple[list[TopicPartition], list[int]]]:
    """Member id → (its partitions, its standby partition numbers); see the module."""
    members = sorted(subscriptions)
    assigned: dict[str, tuple[list[TopicPartition], list[int]]] = {
        member: ([], []) for member in members
    }
    if not members:
        return assigned
    counts = {
        topic: partition_count(topic)
        for topics, _ in subscriptions.values() for topic in topics
    }
    numbers = max(counts.values(), default=0)
    replicas = min(max(wanted for _, wanted in subscriptions.values()), len(members) - 1)
    for p in range(numbers):
        owner = p % len(members)
        for topic in sorted(counts):
            if p >= counts[topic]:
                continue
            member = _subscriber(members, owner, topic, subscriptions)
            if member is not None:
                assigned[member][0].append(TopicPartition(topic, p))
        for step in range(1, replicas + 1):
            assigned[members[(owner + step) % len(members)]][1].append(p)
    return assigned


def _subscriber(
    members: list[str], start: int, topic: str, subscriptions: Mapping[str, Subscription]
) -> str | None:
    """The first member from ``start`` on (in turn) that subscribes to ``topic``."""
    for step in range(len(members)):
        member = members[(start + step) % len(members)]
        if topic in subscriptions[member][0]:
            return member
    return None


class CopartitionedAssignor:
    """The assignor for aiokafka (``partition_assignment_strategy``); one per consumer,
    since it keeps the standby numbers of the member's last assignment."""

    name = ASSIGNOR_NAME
    version = 0

    def __init__(self, standby_replicas: int) -> None:
        self.standby_replicas = standby_replicas
        self.standby: frozenset[int] = frozenset()

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), encode_subscription_user_data(self.standby_replicas)
        )

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        subscriptions = {
            member: (list(meta.subscription), decode_subscription_user_data(meta.user_data))
            for member, meta in members.items()
        }

        def partition_count(topic: str) -> int:
            return len(cluster.partitions_for_topic(topic) or ())

        assignment = {}
        for member, (tps, standby) in assign_copartitioned(
            subscriptions, partition_count
        ).items():
            by_topic: dict[str, list[int]] = {}
            for tp in tps:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            assignment[member] = ConsumerProtocolMemberAssignment(
                self.version, sorted(by_topic.items()), encode_assignment_user_data(standby)
            )
        return assignment

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self.standby = decode_assignment_user_data(assignment.user_data)

    def on_generation_assignment(self, generation: int) -> None:
        """aiokafka calls this on every generation; nothing to keep."""
