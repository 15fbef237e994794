"""Kafka-protocol handlers, one module per API, named after it.

Each module opens with the versions it serves and defines ``async def handle(broker,
context, request)`` returning the typed response (or None: Produce with ``acks=0``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any, Final

__all__ = ["HANDLERS"]

_MODULES: Final = {
    18: "api_versions",
    3: "metadata",
    0: "produce",
    1: "fetch",
    2: "list_offsets",
    8: "offset_commit",
    9: "offset_fetch",
    10: "find_coordinator",
    11: "join_group",
    12: "heartbeat",
    13: "leave_group",
    14: "sync_group",
    15: "describe_groups",
    16: "list_groups",
    19: "create_topics",
    20: "delete_topics",
    21: "delete_records",
    22: "init_producer_id",
    23: "offset_for_leader_epoch",
    24: "add_partitions_to_txn",
    25: "add_offsets_to_txn",
    26: "end_txn",
    28: "txn_offset_commit",
    32: "describe_configs",
    33: "alter_configs",
    37: "create_partitions",
    42: "delete_groups",
    44: "incremental_alter_configs",
}

HANDLERS: Final[dict[int, Callable[..., Awaitable[Any]]]] = {
    key: import_module(f"{__package__}.{name}").handle for key, name in _MODULES.items()
}
