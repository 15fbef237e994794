"""WindowedAggregator against the brute-force models of oracle.py, on random streams split
over 1–3 partitions (each key in one partition, each partition its own aggregator and
watermark), for every window kind, both emit modes and several aggregates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from streamer.operators import (
    HoppingWindows,
    SlidingWindows,
    TumblingWindows,
    WindowDefinition,
)

from .oracle import (
    Event,
    JsonStore,
    States,
    expected_outputs,
    fixed_states,
    hopping_windows,
    session_states,
    sliding_states,
    value_of,
    watermarks,
)
from .strategies import (
    AGGREGATES,
    FAR_FUTURE_MS,
    definitions,
    late_recorder,
    new_aggregator,
    run,
    split,
    streams,
)

EXAMPLES = settings(max_examples=300, deadline=None)
emits = st.sampled_from(["current", "final"])
aggregate_names = st.sampled_from(sorted(AGGREGATES))
partition_counts = st.integers(1, 3)


def oracle_close_ms(definition: WindowDefinition, end_ms: int) -> int:
    """The closing rule, written out again rather than taken from the definition."""
    if isinstance(definition, TumblingWindows | HoppingWindows):
        return end_ms + definition.grace_ms
    if isinstance(definition, SlidingWindows):
        return end_ms + 1 + definition.grace_ms
    return end_ms + definition.gap_ms + 1 + definition.grace_ms


def oracle_states(definition: WindowDefinition, events: list[Event]) -> tuple[States, set[int]]:
    def close(end: int) -> int:
        return oracle_close_ms(definition, end)

    if isinstance(definition, TumblingWindows):
        size = definition.size_ms
        return fixed_states(events, lambda t: [(t // size * size, t // size * size + size)], close)
    if isinstance(definition, HoppingWindows):
        return fixed_states(
            events, lambda t: hopping_windows(definition.size_ms, definition.step_ms, t), close
        )
    if isinstance(definition, SlidingWindows):
        return sliding_states(events, definition.size_ms, definition.grace_ms)
    return session_states(events, definition.gap_ms, definition.grace_ms)


def check_partition(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event]
) -> None:
    seen_late, on_late = late_recorder()
    store = JsonStore()
    aggregator = new_aggregator(definition, aggregate_name, emit, store, on_late=on_late)
    outputs = run(aggregator, events, finish=False)
    states, late = oracle_states(definition, events)
    aggregate = aggregator.aggregate

    def close(end: int) -> int:
        return oracle_close_ms(definition, end)

    expected = expected_outputs(events, states, close, aggregate, emit)
    assert outputs == expected[:-1]
    assert seen_late == [
        (events[i].key, events[i].value, events[i].timestamp_ms) for i in sorted(late)
    ]

    # Before the last advance: the store holds exactly the windows not yet expired.
    if events:
        mark = watermarks(events)[-1]
        retention_ms = definition.retention_ms or 0
        final_state = states[-1]
        kept = {w for w in final_state if mark < close(w[2]) + retention_ms}
        stored = {
            k[1:]: v for k, v in store.decoded().items() if isinstance(k, tuple) and k[0] == "w"
        }
        assert set(stored) == kept
        for window in kept:
            expected_value = value_of(aggregate, events, final_state[window])
            assert aggregate.result(stored[window]) == expected_value
        statistics = aggregator.statistics()
        assert statistics.watermark_ms == mark
        assert statistics.late_events == len(late)
        assert statistics.open_windows == sum(1 for w in final_state if mark < close(w[2]))
        assert statistics.closed_windows == sum(
            1 for w in kept if close(w[2]) <= mark
        )
        for key in {e.key for e in events}:
            queried = aggregator.windows(key)
            assert [(r.start_ms, r.end_ms) for r in queried] == sorted(
                (w[1], w[2]) for w in kept if w[0] == key
            )

    assert aggregator.advance(FAR_FUTURE_MS) == expected[-1]
    # Everything closed and expired: only the watermark is left.
    assert store.decoded() == {"__watermark__": FAR_FUTURE_MS}
    statistics = aggregator.statistics()
    assert statistics.open_windows == statistics.closed_windows == 0
    # and nothing is left behind in memory either
    assert not aggregator._state.by_key and not aggregator._state.timer_heap
    assert not any(v for v in vars(aggregator._engine).values() if isinstance(v, dict))
    if emit == "final":
        assert statistics.finals_emitted == len(states[-1]) if states else True


def check(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event],
    partitions: int,
) -> None:
    for part in split(events, partitions):
        check_partition(definition, aggregate_name, emit, part)


@EXAMPLES
@given(definitions("tumbling"), aggregate_names, emits, streams(), partition_counts)
def test_tumbling_matches_oracle(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event],
    partitions: int,
) -> None:
    check(definition, aggregate_name, emit, events, partitions)


@EXAMPLES
@given(definitions("hopping"), aggregate_names, emits, streams(), partition_counts)
def test_hopping_matches_oracle(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event],
    partitions: int,
) -> None:
    check(definition, aggregate_name, emit, events, partitions)


@EXAMPLES
@given(definitions("sliding"), aggregate_names, emits, streams(), partition_counts)
def test_sliding_matches_oracle(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event],
    partitions: int,
) -> None:
    check(definition, aggregate_name, emit, events, partitions)


@EXAMPLES
@given(definitions("session"), aggregate_names, emits, streams(), partition_counts)
def test_session_matches_oracle(
    definition: WindowDefinition, aggregate_name: str, emit: str, events: list[Event],
    partitions: int,
) -> None:
    check(definition, aggregate_name, emit, events, partitions)
