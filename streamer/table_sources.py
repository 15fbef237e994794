"""Tables kept equal to a topic: reference data (customers by id, prices by product) that
something else writes, read by joins and agents::

    customers_topic = app.topic("customers", value_type=dict, partitions=4)
    customers = app.table("customers", source=customers_topic)

The table holds the latest value of each key of the topic; a record with a ``None`` value (a
tombstone) deletes its key, and a record without a key is ignored. Keys and values are
decoded with the topic's types. Agents cannot write such a table (a ``TableError`` says to
send to the topic instead).

- **Partitioned** (``app.table(..., source=)``): partition ``p`` of the topic is partition
  ``p`` of the table. An internal agent, ``<table>-source``, reads the topic with the app's
  other topics and applies each record to the table, so the table's changes are checkpointed
  with the topic's offsets like any table's, go to its own changelog
  ``<app>-<table>-changelog`` and are restored from it; joins of the table see every change
  (:meth:`Table.on_change`). The changelog is a copy of the topic, kept because a table's
  store offset must be its changelog's: reusing the topic itself (Kafka Streams'
  ``reuse.ktable.source.topics``) would let a store run ahead of the offsets committed with
  the joins that follow it.
- **Global** (``app.global_table(..., source=)``): no copy. The topic itself is the table's
  changelog: every worker restores the whole topic into its store at start, then tails it,
  so any key can be read anywhere. Nothing is written back to the topic.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import StreamerError
from .state import MISSING

if TYPE_CHECKING:
    from .streams import Stream
    from .tables import Table
    from .topics import Topic

__all__ = ["keep_equal_to"]


def keep_equal_to(table: Table, source: Topic) -> None:
    """Make ``table`` (just declared, without a changelog registered) follow ``source``."""
    app = table.app
    if source.app is not app:
        raise StreamerError(f"table {table.name!r}: its source topic belongs to another app")
    table.key_codec = table.partition_key_codec = source.key_codec
    table.value_codec = source.value_codec
    table.keep(f"its source topic {source.name!r} (send changes to the topic)")
    if table.is_global:
        table.changelog_topic = source
        return
    if table.partition_count:  # the topic's declared count: the changelog is the app's
        app.topics[table.changelog_topic.name] = table.changelog_topic
    else:  # as many partitions as the topic turns out to have
        table.copartition_with = source
    app.agent(source, name=f"{table.name}-source")(_writer(table))


def _writer(table: Table) -> Callable[[Stream], Coroutine[Any, Any, None]]:
    async def keep_table(stream: Stream) -> None:
        apply = table.apply
        async for event in stream.events():
            if event.key is None:
                continue  # not a row of any key
            apply(event.partition, event.key, MISSING if event.value is None else event.value)

    keep_table.__name__ = f"keep_{table.name}"
    return keep_table
