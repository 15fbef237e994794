"""The APIs streamer serves, their versions, and the request and response frames.

A frame on the wire is ``int32 size`` + header + body. Request headers are v1 (api key,
version, correlation id, client id) or, in flexible versions, v2 (plus tagged fields);
response headers are v0 (correlation id) or v1 (plus tagged fields), except that ApiVersions
responses never carry header tagged fields (KIP-511: a client must read them before it
knows what the broker speaks).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Final, NamedTuple

from .errors import ProtocolDecodeError, UnknownApiError
from .primitives import Reader, Writer
from .schema import Api, codec

__all__ = [
    "APIS",
    "API_VERSIONS_KEY",
    "Api",
    "RequestHeader",
    "decode_request",
    "decode_request_header",
    "decode_response",
    "encode_request",
    "encode_response",
    "encode_response_parts",
]

API_VERSIONS_KEY: Final = 18


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


# One module per API under messages/, each defining API = Api(...).
_MODULES: Final = (
    "api_versions",
    "metadata",
    "produce",
    "fetch",
    "list_offsets",
    # consumer groups
    "find_coordinator",
    "join_group",
    "sync_group",
    "heartbeat",
    "leave_group",
    "offset_commit",
    "offset_fetch",
    "describe_groups",
    "list_groups",
    "delete_groups",
    # admin
    "create_topics",
    "delete_topics",
    "create_partitions",
    "describe_configs",
    "alter_configs",
    "incremental_alter_configs",
    "delete_records",
    # idempotence and transactions
    "init_producer_id",
    "offset_for_leader_epoch",
    "add_partitions_to_txn",
    "add_offsets_to_txn",
    "end_txn",
    "txn_offset_commit",
)


def _load() -> dict[int, Api]:
    apis: dict[int, Api] = {}
    for name in _MODULES:
        api: Api = import_module(f"{__package__}.messages.{name}").API
        assert api.key not in apis, f"API key {api.key} declared twice"
        apis[api.key] = api
    return dict(sorted(apis.items()))


APIS: Final = _load()


def decode_request_header(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, Reader]:
    """Read the header of a request frame (without its size prefix).

    Raises :class:`UnknownApiError` for an API streamer does not serve; the version is *not*
    checked here, so a caller can still answer ApiVersions at an unknown version.
    """
    reader = Reader(frame)
    api_key = reader.int16()
    api_version = reader.int16()
    correlation_id = reader.int32()
    client_id = reader.nullable_string()
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    api = APIS.get(api_key)
    if api is None:
        raise UnknownApiError(api_key)
    if api.is_flexible(api_version):
        reader.skip_tagged_fields()
    return header, reader


def decode_request(frame: bytes | bytearray | memoryview) -> tuple[RequestHeader, Any]:
    """Decode a whole request frame into its header and typed body."""
    header, reader = decode_request_header(frame)
    api = APIS[header.api_key]
    api.check_version(header.api_version)
    flexible = api.is_flexible(header.api_version)
    body = codec(api.request, header.api_version, flexible).decode(reader)
    if reader.remaining:
        raise ProtocolDecodeError(
            f"{api.name} v{header.api_version} request: {reader.remaining} bytes left over"
        )
    return header, body


def encode_response(api: Api, version: int, correlation_id: int, body: Any) -> bytes:
    """A response frame, size prefix included."""
    return b"".join(encode_response_parts(api, version, correlation_id, body))


def encode_response_parts(
    api: Api, version: int, correlation_id: int, body: Any
) -> list[bytes | bytearray | memoryview]:
    """A response frame as buffers to write in order (large record batches not copied)."""
    writer = Writer()
    writer.int32(0)  # the size, filled in below
    writer.int32(correlation_id)
    flexible = api.is_flexible(version)
    if flexible and api.key != API_VERSIONS_KEY:
        writer.empty_tagged_fields()
    codec(api.response, version, flexible).encode(writer, body)
    parts = writer.getparts()
    first = parts[0]
    assert isinstance(first, bytearray)
    first[0:4] = (sum(len(part) for part in parts) - 4).to_bytes(4, "big")
    return parts


def encode_request(
    body: Any, version: int, correlation_id: int, client_id: str | None = "streamer"
) -> bytes:
    """A request frame, size prefix included (for tests and tools that speak to a broker)."""
    api = next(a for a in APIS.values() if a.request is type(body))
    writer = Writer()
    writer.int32(0)
    writer.int16(api.key)
    writer.int16(version)
    writer.int32(correlation_id)
    writer.nullable_string(client_id)
    flexible = api.is_flexible(version)
    if flexible:
        writer.empty_tagged_fields()
    codec(api.request, version, flexible).encode(writer, body)
    buf = writer.buf
    buf[0:4] = (len(buf) - 4).to_bytes(4, "big")
    return bytes(buf)


def decode_response(
    api: Api, version: int, frame: bytes | bytearray | memoryview
) -> tuple[int, Any]:
    """Decode a response frame (without its size prefix) into its correlation id and body."""
    reader = Reader(frame)
    correlation_id = reader.int32()
    flexible = api.is_flexible(version)
    if flexible and api.key != API_VERSIONS_KEY:
        reader.skip_tagged_fields()
    body = codec(api.response, version, flexible).decode(reader)
    if reader.remaining:
        raise ProtocolDecodeError(f"{api.name} v{version} response: bytes left over")
    return correlation_id, body
