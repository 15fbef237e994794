"""Co-partitioning checks for joins, run once at worker startup.

A join reads partition ``p`` of each of its inputs in one place, so its inputs must have the
same number of partitions and the same keys in the same partitions. A join registers what it
reads when the agent builds it (:func:`require_copartitioned`); the worker calls
:func:`check_copartitioning` once every topic exists and every table knows its partitions,
before any event is delivered, and stops with :class:`CopartitionError` naming the inputs,
their partition counts and what to repartition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import StreamerError

if TYPE_CHECKING:
    from .app import App
    from .tables import Table
    from .topics import Topic

__all__ = ["CopartitionError", "check_copartitioning", "require_copartitioned"]


class CopartitionError(StreamerError):
    """A join's inputs are not co-partitioned."""


@dataclass(frozen=True)
class _Requirement:
    what: str  # "join of orders with customers", for the message
    inputs: tuple[Topic | Table, ...]


def require_copartitioned(app: App, what: str, inputs: Sequence[Topic | Table]) -> None:
    """Record that ``inputs`` (topics, and tables that are not global) must have equal
    partition counts; checked at startup."""
    requirement = _Requirement(what, tuple(inputs))
    if requirement not in app.copartition_requirements:
        app.copartition_requirements.append(requirement)


def check_copartitioning(app: App, partition_count: Callable[[str], int]) -> None:
    """Raise :class:`CopartitionError` for the first requirement whose inputs differ."""
    for requirement in app.copartition_requirements:
        counts = [(_describe(item), _count(item, partition_count))
                  for item in requirement.inputs]
        if len({count for _, count in counts}) <= 1:
            continue
        most = max(count for _, count in counts)
        listed = ", ".join(f"{name} has {count}" for name, count in counts)
        fewer = [name for name, count in counts if count != most]
        raise CopartitionError(
            f"{requirement.what}: inputs are not co-partitioned ({listed} partitions). "
            f"Repartition {' and '.join(fewer)} to {most} partitions first, e.g. "
            f"stream.group_by(key, partitions={most}) or a table declared with "
            f"partitions={most}; or make the table global (app.global_table)."
        )


def _describe(item: Topic | Table) -> str:
    from .tables import Table

    if isinstance(item, Table):
        return f"table {item.name!r}"
    return f"topic {item.name!r}"


def _count(item: Topic | Table, partition_count: Callable[[str], int]) -> int:
    from .tables import Table

    if isinstance(item, Table):
        return item.partition_count or partition_count(item.changelog_topic.name)
    return partition_count(item.name)
