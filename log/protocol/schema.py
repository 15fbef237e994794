"""Typed Kafka messages: dataclasses whose fields say their wire type and versions.

A message is a ``@message`` dataclass whose fields are declared with :func:`f`::

    @message
    class PartitionProduceData:
        index: int = f(INT32)
        records: bytes | None = f(RECORDS)

    @message
    class ProduceRequest:
        transactional_id: str | None = f(NULLABLE_STRING, since=3)
        acks: int = f(INT16)
        ...
        topics: list[TopicProduceData] = f(array(TopicProduceData))

:func:`codec` compiles, once per (class, version), a list of field readers and writers; in
flexible versions strings, bytes and arrays use the compact forms and every struct ends in a
tagged-field section (read and skipped, written empty). A field outside its versions takes its
default when decoding and is not written when encoding.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar, dataclass_transform

from .errors import ProtocolDecodeError, UnsupportedVersionError
from .primitives import Reader, Writer

__all__ = [
    "Api",
    "BOOL",
    "BYTES",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "NULLABLE_BYTES",
    "NULLABLE_STRING",
    "RECORDS",
    "STRING",
    "UINT32",
    "UUID",
    "Codec",
    "Kind",
    "array",
    "codec",
    "decode",
    "encode",
    "f",
    "message",
]

Decoder = Callable[[Reader], Any]
Encoder = Callable[[Writer, Any], None]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """A wire type: how to read and write it in classic and in flexible versions."""

    name: str
    default: Any
    classic: tuple[Decoder, Encoder] | None = None
    compact: tuple[Decoder, Encoder] | None = None  # None: same as classic
    element: Any = None  # arrays: a Kind or a message class

    def pair(self, version: int, flexible: bool) -> tuple[Decoder, Encoder]:
        if self.element is not None:
            return _array_pair(self.element, version, flexible, nullable=self.default is None)
        if flexible and self.compact is not None:
            return self.compact
        assert self.classic is not None
        return self.classic


def _scalar(name: str, default: Any, read: Decoder, write: Encoder) -> Kind:
    return Kind(name, default, (read, write))


INT8: Final = _scalar("int8", 0, Reader.int8, Writer.int8)
INT16: Final = _scalar("int16", 0, Reader.int16, Writer.int16)
INT32: Final = _scalar("int32", 0, Reader.int32, Writer.int32)
UINT32: Final = _scalar("uint32", 0, Reader.uint32, Writer.uint32)
INT64: Final = _scalar("int64", 0, Reader.int64, Writer.int64)
FLOAT64: Final = _scalar("float64", 0.0, Reader.float64, Writer.float64)
BOOL: Final = _scalar("bool", False, Reader.boolean, Writer.boolean)
UUID: Final = _scalar("uuid", uuid.UUID(int=0), Reader.uuid, Writer.uuid)
STRING: Final = Kind(
    "string", "", (Reader.string, Writer.nullable_string),
    (Reader.compact_string, Writer.compact_nullable_string),
)
NULLABLE_STRING: Final = Kind(
    "nullable string", None, (Reader.nullable_string, Writer.nullable_string),
    (Reader.compact_nullable_string, Writer.compact_nullable_string),
)
_BYTES_PAIRS: Final = (
    (Reader.nullable_bytes, Writer.nullable_bytes),
    (Reader.compact_nullable_bytes, Writer.compact_nullable_bytes),
)


def _not_null(read: Decoder, what: str) -> Decoder:
    def read_not_null(reader: Reader) -> Any:
        value = read(reader)
        if value is None:
            raise ProtocolDecodeError(f"null where {what} is required")
        return value

    return read_not_null


BYTES: Final = Kind(
    "bytes", b"",
    (_not_null(Reader.nullable_bytes, "bytes"), Writer.nullable_bytes),
    (_not_null(Reader.compact_nullable_bytes, "bytes"), Writer.compact_nullable_bytes),
)
NULLABLE_BYTES: Final = Kind("nullable bytes", None, *_BYTES_PAIRS)
# Record batches: opaque bytes to the codec; streamer.log validates them.
RECORDS: Final = Kind("records", None, *_BYTES_PAIRS)


def array(element: Kind | type, *, nullable: bool = False) -> Kind:
    """An array of a primitive kind or of a ``@message`` struct."""
    return Kind("array", None if nullable else list, element=element)


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    kind: Kind
    since: int
    until: int | None


def f(kind: Kind, *, since: int = 0, until: int | None = None, default: Any = ...) -> Any:
    """Declare a message field of wire type ``kind`` present in versions ``since..until``."""
    value = kind.default if default is ... else default
    metadata = {"kafka": _FieldSpec(kind, since, until)}
    if callable(value) and isinstance(value, type):  # list: a fresh one per instance
        return dataclasses.field(default_factory=value, metadata=metadata)
    return dataclasses.field(default=value, metadata=metadata)


# No field specifiers: to a type checker every ``= f(...)`` reads as a default, as it is.
@dataclass_transform(kw_only_default=True)
def message(cls: type[T]) -> type[T]:
    """Make ``cls`` a keyword-only slotted dataclass usable as a Kafka message or struct."""
    return dataclasses.dataclass(slots=True, kw_only=True)(cls)


@dataclasses.dataclass(frozen=True, slots=True)
class Codec:
    decode: Callable[[Reader], Any]
    encode: Callable[[Writer, Any], None]


_codecs: dict[tuple[type, int, bool], Codec] = {}


def codec(cls: type, version: int, flexible: bool) -> Codec:
    """The compiled reader and writer of ``cls`` at ``version``."""
    key = (cls, version, flexible)
    found = _codecs.get(key)
    if found is None:
        found = _codecs[key] = _compile(cls, version, flexible)
    return found


def _compile(cls: type, version: int, flexible: bool) -> Codec:
    names: list[str] = []
    readers: list[Decoder] = []
    writers: list[Encoder] = []
    for field in dataclasses.fields(cls):
        spec = field.metadata.get("kafka")
        assert isinstance(spec, _FieldSpec), f"{cls.__name__}.{field.name} has no f(...)"
        if version < spec.since or (spec.until is not None and version > spec.until):
            continue
        read, write = spec.kind.pair(version, flexible)
        names.append(field.name)
        readers.append(read)
        writers.append(write)
    fields = tuple(zip(names, readers, strict=True))
    outputs = tuple(zip(names, writers, strict=True))

    def decode_struct(reader: Reader) -> Any:
        values = {name: read(reader) for name, read in fields}
        if flexible:
            reader.skip_tagged_fields()
        return cls(**values)

    def encode_struct(writer: Writer, value: Any) -> None:
        for name, write in outputs:
            write(writer, getattr(value, name))
        if flexible:
            writer.empty_tagged_fields()

    return Codec(decode_struct, encode_struct)


def _array_pair(
    element: Kind | type, version: int, flexible: bool, *, nullable: bool
) -> tuple[Decoder, Encoder]:
    if isinstance(element, Kind):
        read_one, write_one = element.pair(version, flexible)
    else:
        compiled = codec(element, version, flexible)
        read_one, write_one = compiled.decode, compiled.encode
    read_length = Reader.compact_array_length if flexible else Reader.array_length
    write_length = Writer.compact_array_length if flexible else Writer.array_length

    def read_array(reader: Reader) -> list[Any] | None:
        count = read_length(reader)
        if count < 0:
            if nullable:
                return None
            raise ProtocolDecodeError("null where an array is required")
        return [read_one(reader) for _ in range(count)]

    def write_array(writer: Writer, items: list[Any] | None) -> None:
        if items is None:
            write_length(writer, None)
            return
        write_length(writer, len(items))
        for item in items:
            write_one(writer, item)

    return read_array, write_array


def decode(cls: type[T], data: bytes | bytearray | memoryview, version: int, flexible: bool) -> T:
    """Decode a whole body; bytes left over are an error (a wrong version or a bad frame)."""
    reader = Reader(data)
    value: T = codec(cls, version, flexible).decode(reader)
    if reader.remaining:
        raise ProtocolDecodeError(
            f"{cls.__name__} v{version}: {reader.remaining} bytes left after the last field"
        )
    return value


def encode(value: Any, version: int, flexible: bool) -> bytes:
    writer = Writer()
    codec(type(value), version, flexible).encode(writer, value)
    return bytes(writer.buf)


@dataclasses.dataclass(frozen=True, slots=True)
class Api:
    key: int
    name: str
    request: type
    response: type
    min_version: int
    max_version: int
    flexible_from: int | None = None  # the first flexible (KIP-482) version, if served

    def is_flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from

    def check_version(self, version: int) -> None:
        if not self.min_version <= version <= self.max_version:
            raise UnsupportedVersionError(
                self.name, version, (self.min_version, self.max_version)
            )
