"""An in-process Kafka-protocol server over a memory log, on its own event-loop thread, and a
raw socket client that speaks frames to it."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from streamer.log import Log
from streamer.log.broker import Broker
from streamer.log.protocol.apis import APIS, decode_response, encode_request
from streamer.log.server import KafkaServer

SOCKET_TIMEOUT_S = 10.0


class ServerThread:
    """A KafkaServer running on an event loop in a daemon thread."""

    def __init__(self, **server_options: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.log = Log.memory()
        self.server = KafkaServer(Broker(self.log), "127.0.0.1", 0, **server_options)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host, self.port = self.call(self.server.start())

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class RawClient:
    """Frames over a plain socket, for sending what no real client would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
        self.correlation_id = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">i", len(body)) + body)

    def receive_frame(self) -> bytes | None:
        """The next response frame, or None if the server closed the connection."""
        size_bytes = self._exactly(4)
        if size_bytes is None:
            return None
        return self._exactly(struct.unpack(">i", size_bytes)[0])

    def _exactly(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            try:
                chunk = self.sock.recv(size - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def request(self, body: object, version: int) -> object:
        self.correlation_id += 1
        self.sock.sendall(encode_request(body, version, self.correlation_id))
        frame = self.receive_frame()
        assert frame is not None, "the server closed the connection"
        api = next(a for a in APIS.values() if a.request is type(body))
        correlation_id, response = decode_response(api, version, frame)
        assert correlation_id == self.correlation_id
        return response

    def is_closed_by_server(self) -> bool:
        self.sock.settimeout(SOCKET_TIMEOUT_S)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(request_bytes_max=1 << 20, queued_bytes_max=8 << 20)
    yield running
    running.close()


@pytest.fixture
def client(server: ServerThread) -> Iterator[RawClient]:
    raw = RawClient(server.port)
    yield raw
    raw.close()
