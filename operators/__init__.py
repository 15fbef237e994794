"""streamer.operators: windows and aggregations, as pure logic (no I/O, no asyncio).

::

    errors.py           WindowError
    windows.py          tumbling, hopping, sliding, session: definitions, assignment, closing
    aggregates.py       Aggregate and the built-ins: count, sum, min, max, mean, reduce, aggregate
    windowed.py         WindowedAggregator: one aggregation over one partition; Result
    window_state.py     open windows, timers, the store layout
    fixed_windows.py    tumbling and hopping windows
    sliding_windows.py  sliding windows (Kafka Streams' SlidingWindows)
    session_windows.py  session windows
    table_joins.py      joins with tables: stream-table lookups, KeyJoin, the foreign-key halves
    stream_joins.py     WindowJoiner: windowed and interval joins of two streams; JoinRow
    asof_join.py        AsofJoiner: each left event with the right value current at its time

>>> from streamer.operators import WindowedAggregator, aggregates, hopping
>>> sums = WindowedAggregator(hopping(10, 5), aggregates.sum(), store={})
>>> [(r.start_ms, r.end_ms, r.value) for r in sums.add("k", 3, 7_000)]
[(0, 10000, 3), (5000, 15000, 3)]

``sum``, ``min`` and ``max`` are not re-exported here, so that ``from streamer.operators
import *`` does not shadow Python's builtins: use ``aggregates.sum()`` and so on.
"""

from __future__ import annotations

from . import aggregates
from .aggregates import Aggregate, aggregate, count, mean, reduce
from .asof_join import AsofJoiner
from .errors import JoinError, WindowError
from .stream_joins import JoinRow, JoinStatistics, WindowJoiner
from .table_joins import (
    NO_MATCH,
    Change,
    ForeignKeyLeft,
    ForeignKeyRight,
    KeyJoin,
    Response,
    Subscription,
    join_value,
    lookup_joiner,
)
from .window_state import WATERMARK_KEY, KeyValueStore
from .windowed import Emit, OnLate, Result, WindowedAggregator, WindowedStatistics
from .windows import (
    HoppingWindows,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowDefinition,
    hopping,
    session,
    sliding,
    tumbling,
)

__all__ = [
    "NO_MATCH",
    "WATERMARK_KEY",
    "Aggregate",
    "AsofJoiner",
    "Change",
    "Emit",
    "ForeignKeyLeft",
    "ForeignKeyRight",
    "HoppingWindows",
    "JoinError",
    "JoinRow",
    "JoinStatistics",
    "KeyJoin",
    "KeyValueStore",
    "OnLate",
    "Response",
    "Result",
    "SessionWindows",
    "SlidingWindows",
    "Subscription",
    "TumblingWindows",
    "WindowDefinition",
    "WindowError",
    "WindowJoiner",
    "WindowedAggregator",
    "WindowedStatistics",
    "aggregate",
    "aggregates",
    "count",
    "hopping",
    "join_value",
    "lookup_joiner",
    "mean",
    "reduce",
    "session",
    "sliding",
    "tumbling",
]
