"""Garbage thrown at decode_request: a ProtocolError or a well-typed body, never a crash.

Inputs are random bytes, random bodies behind valid headers, and valid frames (drawn for
every API and version served) that are truncated, extended, or have lengths and counts
overwritten with lies: huge, negative, or varints that never end. Whatever decodes must
honour its declared types (no null where Kafka allows none), and nothing may allocate in
proportion to a length it read rather than to the bytes it was given.
"""

from __future__ import annotations

import struct
import tracemalloc
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamer.log.protocol.apis import APIS, decode_request, encode_request
from streamer.log.protocol.errors import ProtocolDecodeError, ProtocolError
from streamer.log.protocol.primitives import Writer
from streamer.log.protocol.schema import Api, Kind

from .message_strategies import CASES, case_id, requests, wire_fields

# Each input is a few hundred bytes at most: anything slower than this is doing work in
# proportion to a length it was told, not to the bytes it was given.
FAST = settings(
    max_examples=300,
    deadline=timedelta(milliseconds=250),
    suppress_health_check=[HealthCheck.too_slow],
)
MANY = settings(FAST, max_examples=1000)  # for the test that finds the most
CASE = st.sampled_from(CASES)

# Lies to write over a frame: counts and lengths at their extremes, in every width.
LIES = [
    struct.pack(">i", 2**31 - 1),
    struct.pack(">i", -2),
    struct.pack(">i", -(2**31)),
    struct.pack(">i", 1_000_000),
    struct.pack(">h", 2**15 - 1),
    struct.pack(">h", -2),
    struct.pack(">h", 300),
    b"\xff\xff\xff\xff\x0f",  # the largest uvarint: 2**32 - 1
    b"\x80\x80\x80\x80\x80\x80",  # a uvarint that never ends
    b"\xff",
    b"\x80",
    b"\x00",
]

_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    "int8": int,
    "int16": int,
    "int32": int,
    "int64": int,
    "uint32": int,
    "float64": float,
    "bool": bool,
    "uuid": uuid.UUID,
    "string": str,
    "nullable string": str,
    "bytes": bytes,
    "nullable bytes": bytes,
    "records": (bytes, memoryview),
}


def _header(api: Api, version: int, client_id: bytes = b"\x00\x01c") -> bytes:
    tagged = b"\x00" if api.is_flexible(version) else b""
    return struct.pack(">hhi", api.key, version, 7) + client_id + tagged


def _assert_well_typed(value: Any, version: int) -> None:
    for name, kind in wire_fields(type(value), version):
        item = getattr(value, name)
        where = f"{type(value).__name__}.{name} v{version}"
        if item is None:
            assert kind.default is None, f"{where}: null where Kafka allows none"
        elif kind.element is not None:
            assert isinstance(item, list), where
            for element in item:
                if isinstance(kind.element, Kind):
                    assert isinstance(element, _PYTHON_TYPES[kind.element.name]), where
                else:
                    _assert_well_typed(element, version)
        else:
            assert isinstance(item, _PYTHON_TYPES[kind.name]), where


def _decode(frame: bytes) -> None:
    """Decode ``frame``; a ProtocolError is a fine answer, anything else escapes."""
    try:
        header, body = decode_request(frame)
    except ProtocolError:
        return
    _assert_well_typed(body, header.api_version)


@FAST
@given(frame=st.binary(max_size=300))
def test_random_bytes(frame: bytes) -> None:
    _decode(frame)


@FAST
@given(case=CASE, body=st.binary(max_size=200))
def test_random_body_behind_a_valid_header(case: tuple[Api, int], body: bytes) -> None:
    api, version = case
    _decode(_header(api, version) + body)


@FAST
@given(case=CASE, data=st.data())
def test_truncated_frame_is_a_decode_error(case: tuple[Api, int], data: st.DataObject) -> None:
    api, version = case
    frame = _valid_frame(data, api, version)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    # A prefix reads the same fields as the whole frame, until it runs out of bytes.
    with pytest.raises(ProtocolDecodeError):
        decode_request(frame[:cut])


@FAST
@given(case=CASE, data=st.data(), tail=st.binary(min_size=1, max_size=20))
def test_bytes_after_the_body_are_a_decode_error(
    case: tuple[Api, int], data: st.DataObject, tail: bytes
) -> None:
    api, version = case
    with pytest.raises(ProtocolDecodeError):
        decode_request(_valid_frame(data, api, version) + tail)


@MANY
@given(
    case=CASE,
    data=st.data(),
    lies=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(LIES)), max_size=3),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=3),
)
def test_valid_frame_with_lies_written_over_it(
    case: tuple[Api, int],
    data: st.DataObject,
    lies: list[tuple[float, bytes]],
    flips: list[tuple[float, int]],
) -> None:
    api, version = case
    frame = bytearray(_valid_frame(data, api, version))
    for where, lie in lies:
        at = int(where * len(frame))
        frame[at : at + len(lie)] = lie[: len(frame) - at]
    for where, byte in flips:
        frame[int(where * len(frame))] = byte
    _decode(bytes(frame))


def _valid_frame(data: st.DataObject, api: Api, version: int) -> bytes:
    request = data.draw(requests(api, version), label="request")
    return encode_request(request, version, 7, "c")[4:]


# --- lengths that lie about size must fail before anything is allocated --------------------

_DESCRIBE_GROUPS = APIS[15]  # body: array of strings, then (v3+) a bool
_INCREMENTAL_ALTER_CONFIGS = APIS[44]  # v1: flexible, compact arrays
_INIT_PRODUCER_ID = APIS[22]  # v2+: flexible, a nullable string first

_uvarint_writer = Writer()
_uvarint_writer.uvarint(2**32 - 1)
HUGE_UVARINT = bytes(_uvarint_writer.buf)

HUGE_CLAIMS = {
    "array count": _header(_DESCRIBE_GROUPS, 0) + struct.pack(">i", 2**31 - 1) + b"\x00" * 6,
    "string length": _header(_DESCRIBE_GROUPS, 0) + struct.pack(">ih", 1, 2**15 - 1) + b"ab",
    "compact array count": _header(_INCREMENTAL_ALTER_CONFIGS, 1) + HUGE_UVARINT + b"\x00" * 4,
    "compact string length": _header(_INIT_PRODUCER_ID, 2) + HUGE_UVARINT + b"\x00" * 8,
    "client id length": struct.pack(">hhih", 15, 0, 7, 2**15 - 1) + b"\x00" * 10,
    "tagged field count": _header(_INIT_PRODUCER_ID, 2)[:-1] + HUGE_UVARINT + b"\x00" * 8,
    "tagged field size": _header(_INIT_PRODUCER_ID, 2)[:-1] + b"\x01\x00" + HUGE_UVARINT,
    "endless uvarint": _header(_INIT_PRODUCER_ID, 2)[:-1] + b"\x80" * 12,
}


@pytest.mark.parametrize("frame", list(HUGE_CLAIMS.values()), ids=list(HUGE_CLAIMS))
def test_a_huge_claim_fails_at_once(frame: bytes) -> None:
    assert len(frame) <= 32
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolDecodeError):
            decode_request(frame)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 64 * 1024


def _array_elements(cls: type, version: int) -> list[tuple[type, int]]:
    found = []
    for _, kind in wire_fields(cls, version):
        element = kind.element
        if element is not None and not isinstance(element, Kind):
            found += [(element, version), *_array_elements(element, version)]
    return found


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_array_element_takes_a_byte(case: tuple[Api, int]) -> None:
    # The reader refuses a count larger than the bytes left, so no claim allocates more
    # than the frame's size; that holds only if no element can be zero bytes long.
    api, version = case
    if api.is_flexible(version):
        return  # every struct ends in its tagged-field count
    for cls in (api.request, api.response):
        for element, _ in _array_elements(cls, version):
            assert wire_fields(element, version), f"{element.__name__} v{version} is empty"


# --- null where Kafka allows none ----------------------------------------------------------

NULLS = {
    # JoinGroup v0: group, session timeout, member, protocol type, then protocols: -1.
    "array": _header(APIS[11], 0)
    + b"\x00\x01g"
    + struct.pack(">i", 1000)
    + b"\x00\x00\x00\x01c"
    + struct.pack(">i", -1),
    # ... then one protocol, named "r", whose metadata (bytes) is null.
    "bytes": _header(APIS[11], 0)
    + b"\x00\x01g"
    + struct.pack(">i", 1000)
    + b"\x00\x00\x00\x01c"
    + struct.pack(">i", 1)
    + b"\x00\x01r"
    + struct.pack(">i", -1),
    # Heartbeat v0: group id null.
    "string": _header(APIS[12], 0) + struct.pack(">hih", -1, 1, 0),
    # IncrementalAlterConfigs v1 (compact): resources null.
    "compact array": _header(_INCREMENTAL_ALTER_CONFIGS, 1) + b"\x00\x00\x00",
}


@pytest.mark.parametrize("frame", list(NULLS.values()), ids=list(NULLS))
def test_null_where_kafka_allows_none_is_a_decode_error(frame: bytes) -> None:
    with pytest.raises(ProtocolDecodeError, match="null"):
        decode_request(frame)
