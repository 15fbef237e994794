"""A consumer group of three members that rebalances as they join, leave and die.

The scenario is the same for every client; each test module passes its client's name (the
members run :mod:`tests.compat.member` in processes of their own) and a ``produce``
function that sends values with its client's producer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .member import MemberProcess
from .workload import unique_name, wait_until

__all__ = ["SESSION_TIMEOUT_MS", "three_member_group"]

SESSION_TIMEOUT_MS = 6_000  # the broker's group.min.session.timeout.ms
PARTITIONS = 6
MESSAGES_PER_PHASE = 60
JOIN_TIMEOUT_S = 30.0
# A dead member is noticed once its session runs out; then the survivors rejoin.
DEATH_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000 + 20.0

# Sends (partition, value) pairs and returns once the broker acknowledged all of them.
Produce = Callable[[Sequence[tuple[int, str]]], None]


def three_member_group(
    client: str, bootstrap: str, assignor: str, produce: Produce, log_folder: Path,
    create_topic: Callable[[str, int], None],
) -> dict[str, float]:
    """Run the scenario; returns how long each rebalance took, for the test's report."""
    topic = unique_name(f"group-{client}")
    group = unique_name(f"g-{client}-{assignor}")
    create_topic(topic, PARTITIONS)
    everything = frozenset(range(PARTITIONS))
    produced: list[str] = []
    members: list[MemberProcess] = []

    def send(phase: str) -> None:
        batch = [(i % PARTITIONS, f"{phase}-{i}") for i in range(MESSAGES_PER_PHASE)]
        produce(batch)
        produced.extend(value for _, value in batch)

    def start(name: str) -> MemberProcess:
        member = MemberProcess(name, client, bootstrap, topic, group, assignor,
                               SESSION_TIMEOUT_MS, log_folder)
        members.append(member)
        return member

    def describe() -> str:
        return "\n".join(member.describe() for member in members)

    def split_among(owners: Sequence[MemberProcess]) -> Callable[[], bool]:
        """Every partition owned by exactly one of ``owners``, evenly."""
        def check() -> bool:
            parts = [member.assignment for member in owners]
            if any(part is None for part in parts):
                return False
            sizes = [len(part) for part in parts if part is not None]
            union = frozenset().union(*(part for part in parts if part is not None))
            return (union == everything and sum(sizes) == PARTITIONS
                    and max(sizes) - min(sizes) <= 1)
        return check

    timings: dict[str, float] = {}
    try:
        send("before")
        first = start("first")
        timings["first joins"] = wait_until(
            split_among([first]), JOIN_TIMEOUT_S, "the first member owns every partition",
            describe)
        second, third = start("second"), start("third")
        timings["two join"] = wait_until(
            split_among([first, second, third]), JOIN_TIMEOUT_S,
            "three members own two partitions each", describe)
        send("three-members")

        # The first member to join leads the group (it computes the assignment) and keeps
        # the lead across rebalances while it rejoins. It dies: once its session runs out the
        # coordinator must pick a new leader among the survivors.
        first.kill()
        killed_at = time.monotonic()
        wait_until(split_among([second, third]), DEATH_TIMEOUT_S,
                   "the two survivors own every partition after the session timeout", describe)
        timings["leader dies"] = time.monotonic() - killed_at
        send("two-members")

        second.leave()
        timings["one leaves"] = wait_until(
            split_among([third]), JOIN_TIMEOUT_S,
            "the last member owns every partition after the other left", describe)
        send("one-member")

        def all_consumed() -> bool:
            seen = set().union(*(member.values() for member in members))
            return seen >= set(produced)

        def missing() -> str:
            seen = set().union(*(member.values() for member in members))
            lost = sorted(set(produced) - seen)
            return f"{len(lost)} not consumed, e.g. {lost[:10]}\n{describe()}"

        wait_until(all_consumed, JOIN_TIMEOUT_S, "every produced message consumed", missing)
        third.leave()
    finally:
        for member in members:
            member.kill()

    consumed = [value for member in members for value in member.values()]
    assert set(consumed) == set(produced), "consumed values that were never produced"
    # A dead member is only noticed when its session times out: no sooner.
    assert timings["leader dies"] >= SESSION_TIMEOUT_MS / 1000 * 0.9, timings
    return timings

