"""The Kafka protocol's primitive types: a bounded reader and a growing writer.

Every length read from the wire is checked against the bytes that are actually left before
anything is allocated, so a frame that claims a 2 GiB string costs nothing but an error.
"""

from __future__ import annotations

import struct
import uuid
from typing import Final

from .errors import ProtocolDecodeError

__all__ = ["Reader", "Writer"]

_I8: Final = struct.Struct(">b")
_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_U32: Final = struct.Struct(">I")
_I64: Final = struct.Struct(">q")
_F64: Final = struct.Struct(">d")
_UVARINT_BYTES_MAX: Final = 5  # a uint32 in 7-bit groups


class Reader:
    """Reads primitives from one frame; raises :class:`ProtocolDecodeError` on short input."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos
        self.end = len(self.data)

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, size: int) -> int:
        pos = self.pos
        if size < 0 or pos + size > self.end:
            raise ProtocolDecodeError(
                f"frame ends early: {size} bytes wanted at byte {pos}, {self.end - pos} left"
            )
        self.pos = pos + size
        return pos

    def int8(self) -> int:
        value: int = _I8.unpack_from(self.data, self._need(1))[0]
        return value

    def boolean(self) -> bool:
        return self.int8() != 0

    def int16(self) -> int:
        value: int = _I16.unpack_from(self.data, self._need(2))[0]
        return value

    def int32(self) -> int:
        value: int = _I32.unpack_from(self.data, self._need(4))[0]
        return value

    def uint32(self) -> int:
        value: int = _U32.unpack_from(self.data, self._need(4))[0]
        return value

    def int64(self) -> int:
        value: int = _I64.unpack_from(self.data, self._need(8))[0]
        return value

    def float64(self) -> float:
        value: float = _F64.unpack_from(self.data, self._need(8))[0]
        return value

    def uuid(self) -> uuid.UUID:
        start = self._need(16)
        return uuid.UUID(bytes=bytes(self.data[start : start + 16]))

    def uvarint(self) -> int:
        value = shift = 0
        for _ in range(_UVARINT_BYTES_MAX):
            byte = self.data[self._need(1)]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ProtocolDecodeError(f"unsigned varint longer than {_UVARINT_BYTES_MAX} bytes")

    def varint(self) -> int:
        raw = self.uvarint()
        return (raw >> 1) ^ -(raw & 1)

    def raw(self, size: int) -> memoryview:
        start = self._need(size)
        return self.data[start : start + size]

    def _text(self, size: int) -> str:
        try:
            return str(self.raw(size), "utf-8")
        except UnicodeDecodeError as error:
            raise ProtocolDecodeError(f"string is not UTF-8: {error}") from None

    def string(self) -> str:
        size = self.int16()
        if size < 0:
            raise ProtocolDecodeError("null where a string is required")
        return self._text(size)

    def nullable_string(self) -> str | None:
        size = self.int16()
        return None if size < 0 else self._text(size)

    def compact_nullable_string(self) -> str | None:
        size = self.uvarint() - 1
        return None if size < 0 else self._text(size)

    def compact_string(self) -> str:
        text = self.compact_nullable_string()
        if text is None:
            raise ProtocolDecodeError("null where a string is required")
        return text

    def nullable_bytes(self) -> bytes | None:
        size = self.int32()
        return None if size < 0 else bytes(self.raw(size))

    def compact_nullable_bytes(self) -> bytes | None:
        size = self.uvarint() - 1
        return None if size < 0 else bytes(self.raw(size))

    def array_length(self) -> int:
        """An int32 element count, -1 for null; bounded by the bytes left."""
        return self._bounded(self.int32())

    def compact_array_length(self) -> int:
        return self._bounded(self.uvarint() - 1)

    def _bounded(self, count: int) -> int:
        # Every element takes at least one byte, so a count past the bytes left is a lie.
        if count > self.end - self.pos:
            raise ProtocolDecodeError(
                f"array of {count} elements in the {self.end - self.pos} bytes left"
            )
        return max(count, -1)

    def skip_tagged_fields(self) -> None:
        for _ in range(self._bounded(self.uvarint())):
            self.uvarint()  # the tag
            self._need(self.uvarint())


# Byte strings at least this long (record batches) are kept by reference, not copied.
LARGE_BYTES_MIN: Final = 64 * 1024


class Writer:
    """Appends primitives to a bytearray; large byte strings are kept as separate parts,
    so a fetch response's record batches are not copied on their way to the socket."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[bytes | bytearray | memoryview] = []

    def _large(self, data: bytes | bytearray | memoryview) -> None:
        self.parts.append(self.buf)
        self.parts.append(data)
        self.buf = bytearray()

    def getparts(self) -> list[bytes | bytearray | memoryview]:
        """Everything written, in order: small fields gathered, large strings as given."""
        return [*self.parts, self.buf] if self.parts else [self.buf]

    def int8(self, value: int) -> None:
        self.buf += _I8.pack(value)

    def boolean(self, value: bool) -> None:
        self.buf.append(1 if value else 0)

    def int16(self, value: int) -> None:
        self.buf += _I16.pack(value)

    def int32(self, value: int) -> None:
        self.buf += _I32.pack(value)

    def uint32(self, value: int) -> None:
        self.buf += _U32.pack(value)

    def int64(self, value: int) -> None:
        self.buf += _I64.pack(value)

    def float64(self, value: float) -> None:
        self.buf += _F64.pack(value)

    def uuid(self, value: uuid.UUID) -> None:
        self.buf += value.bytes

    def uvarint(self, value: int) -> None:
        while value > 0x7F:
            self.buf.append((value & 0x7F) | 0x80)
            value >>= 7
        self.buf.append(value)

    def varint(self, value: int) -> None:
        self.uvarint((value << 1) ^ (value >> 63))

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        self.buf += data

    def nullable_string(self, value: str | None) -> None:
        if value is None:
            self.int16(-1)
            return
        data = value.encode()
        self.int16(len(data))
        self.buf += data

    def compact_nullable_string(self, value: str | None) -> None:
        if value is None:
            self.uvarint(0)
            return
        data = value.encode()
        self.uvarint(len(data) + 1)
        self.buf += data

    def nullable_bytes(self, value: bytes | bytearray | memoryview | None) -> None:
        if value is None:
            self.int32(-1)
            return
        self.int32(len(value))
        if len(value) >= LARGE_BYTES_MIN:
            self._large(value)
        else:
            self.buf += value

    def compact_nullable_bytes(self, value: bytes | bytearray | memoryview | None) -> None:
        if value is None:
            self.uvarint(0)
            return
        self.uvarint(len(value) + 1)
        if len(value) >= LARGE_BYTES_MIN:
            self._large(value)
        else:
            self.buf += value

    def array_length(self, count: int | None) -> None:
        self.int32(-1 if count is None else count)

    def compact_array_length(self, count: int | None) -> None:
        self.uvarint(0 if count is None else count + 1)

    def empty_tagged_fields(self) -> None:
        self.buf.append(0)
