"""Codecs a topic picks from its declared type."""

from __future__ import annotations

import dataclasses

import msgspec
import pydantic
import pytest

from streamer.serialization import SerializationError, codec_for
from streamer.topics import AUTO_KEY


@dataclasses.dataclass
class View:
    page: str
    duration_ms: int


class ViewStruct(msgspec.Struct):
    page: str
    duration_ms: int


class ViewModel(pydantic.BaseModel):
    page: str
    duration_ms: int


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        (bytes, b"\x00\xff raw"),
        (str, "héllo"),
        (dict, {"a": [1, 2, {"b": None}]}),
        (View, View("/home", 1200)),
        (ViewStruct, ViewStruct("/home", 1200)),
        (ViewModel, ViewModel(page="/home", duration_ms=1200)),
    ],
)
def test_round_trip(value_type: object, value: object) -> None:
    codec = codec_for(value_type)
    data = codec.dumps(value)
    assert isinstance(data, bytes)
    assert codec.loads(data) == value
    assert codec.dumps(None) is None and codec.loads(None) is None


@pytest.mark.parametrize(
    ("value_type", "data"),
    [(str, b"\xff\xfe"), (dict, b"{not json"), (View, b'{"page": "/"}'), (View, b"[1]"),
     (ViewStruct, b'{"page": 1}'), (ViewModel, b'{"page": "/", "duration_ms": "x"}')],
)
def test_bad_input_is_a_serialization_error(value_type: object, data: bytes) -> None:
    with pytest.raises(SerializationError):
        codec_for(value_type).loads(data)


def test_unencodable_value() -> None:
    with pytest.raises(SerializationError):
        codec_for(dict).dumps({"x": object()})
    with pytest.raises(SerializationError):
        codec_for(bytes).dumps(12)


def test_unknown_type_says_what_works() -> None:
    with pytest.raises(TypeError, match="dataclass"):
        codec_for(complex)


def test_numbers_and_booleans_are_json() -> None:
    for value_type, value in ((int, 7), (float, 2.5), (bool, True)):
        codec = codec_for(value_type)
        assert codec.loads(codec.dumps(value)) == value


def test_auto_key() -> None:
    assert AUTO_KEY.dumps("k") == b"k" and AUTO_KEY.loads(b"k") == "k"
    assert AUTO_KEY.dumps(b"\xff") == b"\xff" and AUTO_KEY.loads(b"\xff") == b"\xff"
    assert AUTO_KEY.dumps(7) == b"7"
