"""Bad input closes one connection (or gets an error answer) and nothing else."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamer.log.protocol.error_codes import ErrorCode
from streamer.log.protocol.messages.api_versions import ApiVersionsRequest, ApiVersionsResponse
from streamer.log.protocol.messages.metadata import MetadataRequest, MetadataResponse
from streamer.log.protocol.primitives import Reader

from .conftest import RawClient, ServerThread

_FIXTURE = [HealthCheck.function_scoped_fixture]  # one server for the module, by design


def _header(api_key: int, version: int, correlation_id: int = 7) -> bytes:
    return struct.pack(">hhih", api_key, version, correlation_id, -1)


def assert_server_serves(server: ServerThread) -> None:
    """A fresh connection still gets answers."""
    client = RawClient(server.port)
    try:
        response = client.request(ApiVersionsRequest(), 0)
        assert isinstance(response, ApiVersionsResponse)
        assert response.error_code == ErrorCode.NONE
        metadata = client.request(MetadataRequest(topics=None), 1)
        assert isinstance(metadata, MetadataResponse)
    finally:
        client.close()


def test_unknown_api_versions_version_is_answered_in_v0_format(client: RawClient) -> None:
    client.send_frame(_header(18, 99, 42) + b"\x00")
    frame = client.receive_frame()
    assert frame is not None
    reader = Reader(frame)
    assert reader.int32() == 42  # correlation id; response header v0, no tagged fields
    assert reader.int16() == ErrorCode.UNSUPPORTED_VERSION
    keys = {reader.int16(): (reader.int16(), reader.int16()) for _ in range(reader.int32())}
    assert keys[18] == (0, 3) and 0 in keys and 1 in keys
    assert reader.remaining == 0
    # The connection stays usable: the client retries at a version both know.
    assert isinstance(client.request(ApiVersionsRequest(), 2), ApiVersionsResponse)


def test_flexible_api_versions_v3(client: RawClient) -> None:
    request = ApiVersionsRequest(client_software_name="t", client_software_version="1")
    response = client.request(request, 3)
    assert isinstance(response, ApiVersionsResponse)
    assert response.error_code == ErrorCode.NONE


def test_unknown_api_key_closes_only_that_connection(server: ServerThread) -> None:
    client = RawClient(server.port)
    client.send_frame(_header(9999, 0) + b"\x00\x00")
    assert client.is_closed_by_server()
    assert_server_serves(server)


def test_unsupported_version_of_other_api_closes_connection(server: ServerThread) -> None:
    client = RawClient(server.port)
    client.send_frame(_header(3, 77) + b"\x00\x00\x00\x00")
    assert client.is_closed_by_server()
    assert_server_serves(server)


def test_truncated_body_closes_connection(server: ServerThread) -> None:
    client = RawClient(server.port)
    client.send_frame(_header(3, 1) + b"\x00\x00\x00\x05")  # 5 topics, none sent
    assert client.is_closed_by_server()
    assert_server_serves(server)


def test_frame_over_the_limit_closes_before_the_body_arrives(server: ServerThread) -> None:
    client = RawClient(server.port)
    client.send_raw(struct.pack(">i", (1 << 20) + 1))  # one byte over request_bytes_max
    assert client.is_closed_by_server()
    assert_server_serves(server)


def test_negative_and_tiny_sizes_close_connection(server: ServerThread) -> None:
    for size in (-1, -(2**31), 0, 3):
        client = RawClient(server.port)
        client.send_raw(struct.pack(">i", size) + b"\x00" * 16)
        assert client.is_closed_by_server(), size
    assert_server_serves(server)


def test_announced_but_unsent_bytes_do_not_stall_others(server: ServerThread) -> None:
    # Each claims almost the whole per-request limit and sends a little; together they
    # announce more than the server's whole request budget (8 MiB).
    stalled = [RawClient(server.port) for _ in range(12)]
    for client in stalled:
        client.send_raw(struct.pack(">i", 1 << 20) + _header(3, 1) + b"\x00" * 100)
    assert_server_serves(server)
    for client in stalled:
        client.close()


def test_two_hundred_concurrent_connections(server: ServerThread) -> None:
    clients = [RawClient(server.port) for _ in range(200)]
    errors: list[BaseException] = []

    def work(client: RawClient) -> None:
        try:
            for _ in range(3):
                response = client.request(MetadataRequest(topics=None), 5)
                assert isinstance(response, MetadataResponse)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for client in clients:
        client.close()
    assert not errors, errors[:3]
    assert_server_serves(server)


def test_pipelined_requests_are_answered_in_order(client: RawClient) -> None:
    frames = b""
    for correlation_id in range(1, 51):
        body = _header(18, 0, correlation_id)
        frames += struct.pack(">i", len(body)) + body
    client.send_raw(frames)
    for correlation_id in range(1, 51):
        frame = client.receive_frame()
        assert frame is not None
        assert struct.unpack(">i", frame[:4])[0] == correlation_id


@settings(max_examples=150, deadline=None, suppress_health_check=_FIXTURE)
@given(
    api_key=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22,
                             32, 33, 37, 42, 44, 9999]),
    version=st.integers(-2, 20),
    body=st.binary(max_size=300),
)
def test_generated_garbage_never_harms_the_server(
    server: ServerThread, api_key: int, version: int, body: bytes
) -> None:
    client = RawClient(server.port)
    try:
        client.send_frame(_header(api_key, version) + body)
        # Whatever happens to this connection (an error answer, a close, or even a valid
        # answer to bytes that happen to decode), the server must go on serving.
        client.sock.settimeout(2)
        with contextlib.suppress(TimeoutError):  # a Fetch or JoinGroup parked on garbage
            client.receive_frame()
    finally:
        client.close()
    assert_server_serves(server)


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE)
@given(data=st.binary(min_size=1, max_size=200))
def test_random_bytes_on_the_wire(server: ServerThread, data: bytes) -> None:
    client = RawClient(server.port)
    try:
        client.send_raw(data)
        client.sock.shutdown(socket.SHUT_WR)  # end of input: a partial frame is dropped
        while client.receive_frame() is not None:  # an answer, if the bytes made sense
            pass
    finally:
        client.close()
    assert_server_serves(server)
