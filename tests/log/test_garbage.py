"""Garbage thrown at append: a typed LogError or a clean append, never a crash or damage.

Inputs are random bytes, and batches built by aiokafka then truncated, extended or
mutated; some mutations re-seal the CRC so the damage reaches the checks behind it
(attributes, counts, offsets, producer fields). After every input the log must hold exactly
the batches it accepted, readable, and the same after a reopen and after a crash.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from streamer.log import Log, LogError, ManualClock, MemoryFilesystem, PartitionLog, compact

from .batches import ROOT, T0_MS, Record, build_batch, patch, reseal_crc

_OFFSET_PREFIX = struct.Struct(">qii")


@st.composite
def good_batches(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(1, 4))
    keys = draw(st.lists(st.binary(max_size=8) | st.none(), min_size=count, max_size=count))
    values = draw(st.lists(st.binary(max_size=24) | st.none(), min_size=count, max_size=count))
    timestamps = draw(st.lists(st.integers(0, 1 << 42), min_size=count, max_size=count))
    idempotent = draw(st.booleans())
    return build_batch(
        [Record(k, v, t, ()) for k, v, t in zip(keys, values, timestamps, strict=True)],
        codec=draw(st.sampled_from([0, 0, 1, 2, 3, 4])),
        producer_id=draw(st.integers(0, 3)) if idempotent else -1,
        producer_epoch=draw(st.integers(0, 2)) if idempotent else -1,
        base_sequence=draw(st.integers(0, 8)) if idempotent else -1,
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(good_batches()))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        reseal_crc(data)  # let the damage past the CRC check
    return bytes(data)


@st.composite
def field_edits(draw: st.DrawFn) -> bytes:
    """A batch with one header field set to an odd value and its CRC re-sealed."""
    data = bytearray(draw(good_batches()))
    field = draw(
        st.sampled_from(
            [
                (">h", 21),
                (">i", 23),
                (">q", 27),
                (">q", 35),
                (">q", 43),
                (">h", 51),
                (">i", 53),
                (">i", 57),
                (">i", 8),
                (">b", 16),
            ]
        )
    )
    fmt, position = field
    bits = struct.calcsize(fmt) * 8
    value = draw(
        st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        | st.sampled_from([-1, 0, 1, 2, 7, 0x20, 0x40])
    )
    struct.pack_into(fmt, data, position, value)
    return reseal_crc(data)


@st.composite
def truncated_or_extended(draw: st.DrawFn) -> bytes:
    data = b"".join(draw(st.lists(good_batches(), min_size=1, max_size=3)))
    if draw(st.booleans()):
        return data[: draw(st.integers(0, len(data) - 1))]
    return data + draw(st.binary(min_size=1, max_size=80))


inputs = st.one_of(
    st.binary(max_size=200),
    mutated(),
    field_edits(),
    truncated_or_extended(),
    good_batches(),
    st.lists(good_batches(), min_size=2, max_size=3).map(b"".join),
)


@dataclass
class Model:
    """The batches the log accepted, as it must store them."""

    stored: list[bytes]
    log_end_offset: int = 0


def _expected_bytes(sent: bytes, base_offset: int) -> list[bytes]:
    batches = []
    position = 0
    offset = base_offset
    while position < len(sent):
        (length,) = struct.unpack_from(">i", sent, position + 8)
        batch = sent[position : position + length + 12]
        (delta,) = struct.unpack_from(">i", batch, 23)
        batches.append(_OFFSET_PREFIX.pack(offset, length, 0) + batch[16:])
        offset += delta + 1
        position += length + 12
    return batches


def _stored_batches(partition: PartitionLog) -> list[bytes]:
    batches = []
    offset = partition.log_start_offset
    while offset < partition.log_end_offset:
        data = partition.read(offset, max_bytes=1 << 16).records
        assert data, f"no batch at offset {offset} below the log end"
        position = 0
        while position < len(data):
            base, length, _ = _OFFSET_PREFIX.unpack_from(data, position)
            (delta,) = struct.unpack_from(">i", data, position + 23)
            batches.append(data[position : position + length + 12])
            assert base >= offset or not batches[:-1]
            offset = base + delta + 1
            position += length + 12
    return batches


def _check(partition: PartitionLog, model: Model, *, acknowledged: bool = True) -> None:
    assert partition.log_end_offset == model.log_end_offset
    assert _stored_batches(partition) == model.stored
    if acknowledged:  # after recovery, only what the log fsyncs again counts as durable
        assert partition.durable_offset == model.log_end_offset


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(inputs, min_size=1, max_size=6), st.booleans())
def test_append_survives_garbage(attempts: list[bytes], small_segments: bool) -> None:
    fs = MemoryFilesystem()
    clock = ManualClock()
    config = {"segment.bytes": 300} if small_segments else {}
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("g", 1, config)
    partition = log.partition("g", 0)
    model = Model([])
    for data in attempts:
        before = partition.log_end_offset
        try:
            result = partition.append(data)
        except LogError as error:
            event(type(error).__name__)
            assert partition.log_end_offset == before
        else:
            event("duplicate" if result.duplicate else "appended")
            if result.duplicate:
                assert result.last_offset < before
            else:
                assert result.base_offset == before
                model.stored.extend(_expected_bytes(data, before))
                model.log_end_offset = result.last_offset + 1
        _check(partition, model)
    appended = partition.append(build_batch(1))
    assert appended.base_offset == model.log_end_offset
    model.stored.extend(_expected_bytes(build_batch(1), model.log_end_offset))
    model.log_end_offset += 1
    _check(partition, model)

    with Log.open(ROOT, fs=fs.crash(), clock=clock) as crashed:
        survivor = crashed.partition("g", 0)
        assert survivor.recovery_notes == []
        _check(survivor, model, acknowledged=False)
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        _check(reopened.partition("g", 0), model)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(inputs, min_size=1, max_size=6),
    st.lists(st.integers(-1, 1 << 43), min_size=1, max_size=4),
)
def test_lookups_and_compaction_survive_whatever_was_accepted(
    attempts: list[bytes], timestamps: list[int]
) -> None:
    fs = MemoryFilesystem()
    clock = ManualClock()
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("g", 1, {"cleanup.policy": "compact,delete", "retention.ms": "-1"})
    partition = log.partition("g", 0)
    for data in attempts:
        with contextlib.suppress(LogError):
            partition.append(data)
    partition.append(build_batch(1))
    partition.roll()
    end = partition.log_end_offset
    for timestamp in timestamps:
        found = partition.offset_for_timestamp(timestamp)
        assert found is None or 0 <= found < end
    compact(partition)
    log.run_maintenance()
    assert partition.log_end_offset == end
    stored = _stored_batches(partition)
    for timestamp in timestamps:
        found = partition.offset_for_timestamp(timestamp)
        assert found is None or 0 <= found < end
    log.close()
    with Log.open(ROOT, fs=fs, clock=clock) as reopened:
        assert _stored_batches(reopened.partition("g", 0)) == stored


def test_a_batch_with_undecodable_records_does_not_break_lookups_or_compaction(
    fs: MemoryFilesystem, clock: ManualClock
) -> None:
    log = Log.open(ROOT, fs=fs, clock=clock)
    log.create_topic("g", 1, {"cleanup.policy": "compact"})
    partition = log.partition("g", 0)
    partition.append(build_batch([Record(b"k", b"old", T0_MS)]))
    # Claims gzip but is not compressed: the CRC is right, so append takes it.
    lying = patch(build_batch([Record(b"k", b"?", T0_MS + 10)]), ">h", 21, 1)
    assert partition.append(lying).base_offset == 1
    partition.append(build_batch([Record(b"other", b"v", T0_MS + 20)]))
    assert partition.offset_for_timestamp(T0_MS + 5) == 1
    partition.roll()
    put_after = partition.append(build_batch([Record(b"k", b"new", T0_MS + 30)]))
    compact(partition)
    log.run_maintenance()
    offsets = [struct.unpack_from(">q", batch)[0] for batch in _stored_batches(partition)]
    assert offsets == [1, 2, put_after.base_offset]  # the lying batch is kept verbatim
    assert _stored_batches(partition)[0][16:] == lying[16:]
