"""Brute-force models of windowed aggregation, written apart from streamer.operators.

Each model takes one partition's events in arrival order and returns, for every prefix of
the stream, the windows that exist after it, each with the indices of the events it holds:
``states[i][(key, start_ms, end_ms)] == [j, ...]``. The expected output of every call then
follows from the states and the watermarks alone (:func:`expected_outputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from streamer.operators import Aggregate, Result

Window = tuple[Any, int, int]  # (key, start_ms, end_ms)
States = list[dict[Window, list[int]]]


@dataclass(frozen=True)
class Event:
    key: str
    value: int
    timestamp_ms: int


class JsonStore:
    """A store like the lead's: keys and values go through JSON, so tuples come back as
    lists, and anything not JSON-serializable fails loudly."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def get(self, key: Any) -> Any:
        raw = self.data.get(orjson.dumps(key))
        return None if raw is None else orjson.loads(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[orjson.dumps(key)] = orjson.dumps(value)

    def __delitem__(self, key: Any) -> None:
        del self.data[orjson.dumps(key)]

    def __contains__(self, key: object) -> bool:
        return orjson.dumps(key) in self.data

    def items(self) -> list[tuple[Any, Any]]:
        return [(orjson.loads(k), orjson.loads(v)) for k, v in self.data.items()]

    def copy(self) -> JsonStore:
        return JsonStore(self.data)

    def decoded(self) -> dict[Any, Any]:
        """Keys as tuples (for comparisons)."""
        return {_tuple(k): v for k, v in self.items()}


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def watermarks(events: list[Event]) -> list[int]:
    marks, mark = [], None
    for event in events:
        mark = event.timestamp_ms if mark is None else max(mark, event.timestamp_ms)
        marks.append(mark)
    return marks


# -- tumbling and hopping ---------------------------------------------------------------


def hopping_windows(size_ms: int, step_ms: int, t: int) -> list[tuple[int, int]]:
    """By enumeration: every [k*step, k*step+size) holding t, none starting before 0."""
    first = t // step_ms - size_ms // step_ms - 2
    found = []
    for k in range(first, t // step_ms + 2):
        start = k * step_ms
        if start <= t < start + size_ms and start >= 0:
            found.append((start, start + size_ms))
    return found


def fixed_states(
    events: list[Event],
    windows_of: Callable[[int], Iterable[tuple[int, int]]],
    close_ms: Callable[[int], int],
) -> tuple[States, set[int]]:
    """An event joins each of its windows that is open (``close_ms(end) > watermark``)."""
    marks = watermarks(events)
    held: dict[Window, list[int]] = {}
    states: States = []
    late: set[int] = set()
    for i, event in enumerate(events):
        joined = False
        for start, end in windows_of(event.timestamp_ms):
            if marks[i] < close_ms(end):
                held.setdefault((event.key, start, end), []).append(i)
                joined = True
        if not joined:
            late.add(i)
        states.append({w: list(m) for w, m in held.items()})
    return states, late


# -- sliding ----------------------------------------------------------------------------


def sliding_states(events: list[Event], size_ms: int, grace_ms: int) -> tuple[States, set[int]]:
    """Windows [x-size, x] for each record x, and [x+1, x+1+size] for each record x with
    another in (x, x+1+size]; a window exists once the records defining it have come while
    it was open, and holds every on-time record in its range that came while it was open."""
    marks = watermarks(events)
    n = len(events)

    def close(end: int) -> int:
        return end + 1 + grace_ms

    late = {i for i, e in enumerate(events) if marks[i] >= close(e.timestamp_ms + size_ms)}
    on_time = [i for i in range(n) if i not in late]
    candidates: set[Window] = set()
    for i in on_time:
        key, t = events[i].key, events[i].timestamp_ms
        candidates.add((key, t - size_ms, t))
        candidates.add((key, t + 1, t + 1 + size_ms))
    created: dict[Window, int] = {}
    for window in candidates:
        key, start, end = window
        for m in range(n):
            if marks[m] >= close(end):
                break
            seen = {events[j].timestamp_ms for j in on_time if j <= m and events[j].key == key}
            if end in seen or (start - 1 in seen and any(start <= t <= end for t in seen)):
                created[window] = m
                break
    members = {
        (key, start, end): [
            j for j in on_time
            if events[j].key == key and start <= events[j].timestamp_ms <= end
            and marks[j] < close(end)
        ]
        for key, start, end in created
    }
    states: States = []
    for i in range(n):
        states.append({
            w: [j for j in members[w] if j <= i] for w, at in created.items() if at <= i
        })
    return states, late


# -- sessions ---------------------------------------------------------------------------


def _components(events: list[Event], indices: list[int], gap_ms: int) -> list[list[int]]:
    ordered = sorted(indices, key=lambda j: (events[j].timestamp_ms, j))
    groups: list[list[int]] = []
    for j in ordered:
        if groups and events[j].timestamp_ms - events[groups[-1][-1]].timestamp_ms <= gap_ms:
            groups[-1].append(j)
        else:
            groups.append([j])
    return [sorted(g) for g in groups]


def _session(events: list[Event], members: list[int]) -> Window:
    times = [events[j].timestamp_ms for j in members]
    return events[members[0]].key, min(times), max(times)


def session_states(events: list[Event], gap_ms: int, grace_ms: int) -> tuple[States, set[int]]:
    """Sessions are the connected groups (at most ``gap`` apart) of the open events; a group
    whose ``last + gap + 1 + grace`` the watermark reaches is frozen for good."""
    marks = watermarks(events)

    def close(end: int) -> int:
        return end + gap_ms + 1 + grace_ms

    open_events: dict[str, list[int]] = {}
    frozen: dict[Window, list[int]] = {}
    states: States = []
    late: set[int] = set()
    for i, event in enumerate(events):
        candidate = open_events.get(event.key, []) + [i]
        mine = next(g for g in _components(events, candidate, gap_ms) if i in g)
        if close(_session(events, mine)[2]) <= marks[i]:
            late.add(i)
        else:
            open_events[event.key] = candidate
        for key in list(open_events):
            still_open = []
            for group in _components(events, open_events[key], gap_ms):
                if close(_session(events, group)[2]) <= marks[i]:
                    frozen[_session(events, group)] = group
                else:
                    still_open += group
            open_events[key] = sorted(still_open)
        state = dict(frozen)
        for indices in open_events.values():
            for group in _components(events, indices, gap_ms):
                state[_session(events, group)] = group
        states.append(state)
    return states, late


# -- expected output --------------------------------------------------------------------


def value_of(aggregate: Aggregate, events: list[Event], members: list[int]) -> Any:
    acc = aggregate.init()
    for j in members:
        acc = aggregate.add(acc, events[j].value)
    return aggregate.result(acc)


def _order(window: Window) -> tuple[int, int, Any]:
    return window[2], window[1], window[0]


def expected_outputs(
    events: list[Event],
    states: States,
    close_ms: Callable[[int], int],
    aggregate: Aggregate,
    emit: str,
) -> list[list[Result]]:
    """One list per ``add`` call, then one for the final ``advance`` past everything."""
    marks = watermarks(events)
    outputs: list[list[Result]] = []
    previous: dict[Window, list[int]] = {}
    for i, state in enumerate(states):
        if emit == "current":
            changed = [
                w for w, members in state.items()
                if close_ms(w[2]) > marks[i] and (w not in previous or i in members)
            ]
        else:
            before = marks[i - 1] if i else None
            changed = [
                w for w in state
                if close_ms(w[2]) <= marks[i] and (before is None or before < close_ms(w[2]))
            ]
        outputs.append([
            Result(w[0], w[1], w[2], value_of(aggregate, events, state[w]), emit == "final")
            for w in sorted(changed, key=_order)
        ])
        previous = state
    last = states[-1] if states else {}
    remaining = [w for w in last if not marks or close_ms(w[2]) > marks[-1]]
    outputs.append([
        Result(w[0], w[1], w[2], value_of(aggregate, events, last[w]), True)
        for w in sorted(remaining, key=_order)
    ] if emit == "final" else [])
    return outputs
