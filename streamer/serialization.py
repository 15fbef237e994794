"""Keys and values on the wire: bytes, str, JSON, and typed records.

``codec_for(value_type)`` picks the codec for what a topic declares:

- ``bytes`` or ``None``: as is;
- ``str``: UTF-8;
- ``dict``, ``list``, ``int``, ``float``, ``bool``, ``"json"``: JSON through orjson;
- a dataclass: JSON, decoded into the dataclass;
- a msgspec ``Struct``: msgspec's JSON codec for that type;
- a pydantic ``BaseModel``: its own JSON validation and dumping.

A value that does not decode raises :class:`SerializationError`, which the app's error policy
handles (it never kills a worker silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from .errors import StreamerError

__all__ = ["Codec", "SerializationError", "codec_for"]


class SerializationError(StreamerError):
    """A key or value could not be encoded or decoded with its topic's type."""


class Codec(Protocol):
    def dumps(self, value: Any) -> bytes | None: ...

    def loads(self, data: bytes | None) -> Any: ...


class _Bytes:
    def dumps(self, value: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode()
        raise SerializationError(f"expected bytes, got {type(value).__name__}")

    def loads(self, data: bytes | None) -> Any:
        return data


class _Str:
    def dumps(self, value: Any) -> bytes | None:
        return None if value is None else str(value).encode()

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError as error:
            raise SerializationError(f"not UTF-8: {error}") from None


class _Json:
    def dumps(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return orjson.dumps(value)
        except TypeError as error:
            raise SerializationError(f"cannot encode as JSON: {error}") from None

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise SerializationError(f"not JSON: {error}") from None


class _Dataclass(_Json):
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def loads(self, data: bytes | None) -> Any:
        fields = super().loads(data)
        if fields is None:
            return None
        if not isinstance(fields, dict):
            raise SerializationError(f"{self.cls.__name__}: expected a JSON object")
        try:
            return self.cls(**fields)
        except TypeError as error:
            raise SerializationError(f"{self.cls.__name__}: {error}") from None


class _Adapter:
    """A codec from a pair of functions, errors mapped to SerializationError."""

    def __init__(
        self, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any], name: str
    ) -> None:
        self._dumps = dumps
        self._loads = loads
        self._name = name

    def dumps(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            return self._dumps(value)
        except Exception as error:
            raise SerializationError(f"{self._name}: cannot encode: {error}") from None

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return self._loads(data)
        except Exception as error:
            raise SerializationError(f"{self._name}: {error}") from None


_BYTES = _Bytes()
_STR = _Str()
_JSON = _Json()


def codec_for(value_type: Any) -> Codec:
    """The codec for a topic's declared key or value type (see the module docstring)."""
    if value_type is None or value_type is bytes or value_type == "raw":
        return _BYTES
    if value_type is str:
        return _STR
    if value_type in (dict, list, "json", int, float, bool):  # JSON numbers and booleans too
        return _JSON
    if isinstance(value_type, type):
        if dataclasses.is_dataclass(value_type):
            return _Dataclass(value_type)
        special = _typed_codec(value_type)
        if special is not None:
            return special
    if hasattr(value_type, "dumps") and hasattr(value_type, "loads"):
        codec: Codec = value_type  # a codec object given directly
        return codec
    raise TypeError(
        f"no codec for {value_type!r}: use bytes, str, dict (JSON), a dataclass, a msgspec "
        "Struct, a pydantic model, or an object with dumps() and loads()"
    )


def _typed_codec(cls: type) -> Codec | None:
    for base in cls.__mro__:
        module = base.__module__
        if module.startswith("msgspec") and base.__name__ == "Struct":
            import msgspec

            encoder = msgspec.json.Encoder()
            decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(cls)
            return _Adapter(encoder.encode, decoder.decode, cls.__name__)
        if module.startswith("pydantic") and base.__name__ == "BaseModel":
            validate: Callable[[bytes], Any] = cls.model_validate_json  # type: ignore[attr-defined]
            return _Adapter(lambda value: value.model_dump_json().encode(), validate, cls.__name__)
    return None
