"""The Kafka-protocol server: a thin asyncio shell around the codec and the handlers.

Each connection reads size-prefixed frames, decodes them and starts a handler per request,
so that a producer's pipelined requests share one fsync; responses go back in request
order, as Kafka promises. Bounds:

- a frame larger than ``request_bytes_max`` (Kafka's ``socket.request.max.bytes``) or
  smaller than a request header closes that connection;
- at most ``in_flight_max`` requests per connection are being handled at once;
- at most ``queued_bytes_max`` bytes of requests are held by all connections together
  (Kafka's ``queued.max.request.bytes``), counted as they arrive, so a client that
  announces a large frame and sends little holds little; a reader waits for room.

A frame that does not decode, an unknown API or an unsupported version (except ApiVersions,
answered in v0 format as KIP-511 asks) closes that one connection; other clients go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .broker import Broker
from .handlers import HANDLERS
from .handlers.api_versions import unsupported_version_response
from .protocol.apis import (
    API_VERSIONS_KEY,
    APIS,
    RequestHeader,
    decode_request,
    encode_response_parts,
)
from .protocol.errors import ProtocolError, UnsupportedVersionError
from .protocol.primitives import Reader

__all__ = ["KafkaServer", "RequestContext"]

logger = logging.getLogger("streamer.server")

REQUEST_BYTES_MAX = 100 * 1024 * 1024
QUEUED_BYTES_MAX = 256 * 1024 * 1024
IN_FLIGHT_MAX = 32
_HEADER_BYTES_MIN = 10  # api key, version, correlation id, a null client id
SHUTDOWN_GRACE_S = 10.0
# A frame's body must keep arriving: a client silent this long mid-frame is dropped.
FRAME_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RequestContext:
    header: RequestHeader
    client_host: str
    local_host: str  # the address the client reached us at: what Metadata advertises

    @property
    def version(self) -> int:
        return self.header.api_version


class _ByteBudget:
    """Bytes of requests held at once, across connections (one event loop: no locks)."""

    def __init__(self, total: int) -> None:
        self.available = total
        self._freed: asyncio.Event | None = None

    async def take(self, size: int) -> None:
        while self.available < size:
            if self._freed is None:
                self._freed = asyncio.Event()
            await self._freed.wait()
        self.available -= size

    def give(self, size: int) -> None:
        self.available += size
        if self._freed is not None:
            self._freed.set()  # every waiter looks again
            self._freed = None


class KafkaServer:
    def __init__(
        self,
        broker: Broker,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        request_bytes_max: int = REQUEST_BYTES_MAX,
        queued_bytes_max: int = QUEUED_BYTES_MAX,
        in_flight_max: int = IN_FLIGHT_MAX,
    ) -> None:
        assert request_bytes_max <= queued_bytes_max
        self.broker = broker
        self.host = host
        self.port = port
        self.request_bytes_max = request_bytes_max
        self.in_flight_max = in_flight_max
        self._queued_bytes_max = queued_bytes_max
        self.budget: _ByteBudget | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.connections_total = 0

    async def start(self) -> tuple[str, int]:
        """Listen; returns the address actually bound (port 0 picks a free one)."""
        self.budget = _ByteBudget(self._queued_bytes_max)
        await self.broker.start()
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        sockname = self._server.sockets[0].getsockname()
        self.port = sockname[1]
        self.broker.port = self.port
        return self.host, self.port

    async def close(self) -> None:
        """Stop accepting, answer what is in flight, then close the broker (flushing)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=SHUTDOWN_GRACE_S)
        await self.broker.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        self.connections_total += 1
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or (self.host, self.port)
        connection = _Connection(self, reader, writer, str(peer[0]), str(local[0]))
        try:
            await connection.run()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


Handler = Callable[[Broker, RequestContext, Any], Awaitable[Any]]
_Frame = list[bytes | bytearray | memoryview]  # a response frame's buffers, written in order


class _Connection:
    def __init__(
        self,
        server: KafkaServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_host: str,
        local_host: str,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client_host = client_host
        self.local_host = local_host
        self.pending: asyncio.Queue[tuple[asyncio.Task[_Frame | None], int] | None] = (
            asyncio.Queue(server.in_flight_max)
        )
        self.in_flight: set[asyncio.Task[_Frame | None]] = set()

    async def run(self) -> None:
        responder = asyncio.get_running_loop().create_task(self._respond())
        try:
            await self._read_requests()
        except asyncio.CancelledError:
            pass  # shutdown: stop reading, answer what is in flight
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            # The client went away (or stalled mid-frame): nobody will read the answers,
            # and a parked JoinGroup must not count its member as present.
            for task in self.in_flight:
                task.cancel()
        finally:
            await self.pending.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(responder, SHUTDOWN_GRACE_S)

    async def _read_requests(self) -> None:
        server = self.server
        budget = server.budget
        assert budget is not None
        while True:
            size = int.from_bytes(await self.reader.readexactly(4), "big", signed=True)
            if not _HEADER_BYTES_MIN <= size <= server.request_bytes_max:
                logger.warning(
                    "closing connection from %s: a frame of %d bytes (allowed %d to %d)",
                    self.client_host, size, _HEADER_BYTES_MIN, server.request_bytes_max,
                )
                return
            frame = await self._read_frame(size, budget)
            try:
                task = self._start(frame)
            except BaseException:
                budget.give(size)
                raise
            if task is None:
                budget.give(size)
                return
            await self.pending.put((task, size))

    async def _read_frame(self, size: int, budget: _ByteBudget) -> bytes:
        """Read a frame's body, taking budget for its bytes as they arrive, so a client
        that announces a large frame and sends little holds little."""
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                while received < size:
                    chunk = await self.reader.read(min(size - received, _CHUNK_BYTES))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", size - received)
                    await budget.take(len(chunk))
                    received += len(chunk)
                    chunks.append(chunk)
        except BaseException:
            budget.give(received)
            raise
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _start(self, frame: bytes) -> asyncio.Task[_Frame | None] | None:
        """Decode ``frame`` and start its handler; None closes the connection."""
        try:
            header, body = decode_request(frame)
        except UnsupportedVersionError:
            peeked = _peek_header(frame)
            if peeked is not None and peeked.api_key == API_VERSIONS_KEY:
                response = unsupported_version_response(peeked.correlation_id)
                return asyncio.get_running_loop().create_task(_ready(response))
            self._refuse(frame, "unsupported version")
            return None
        except ProtocolError as error:
            self._refuse(frame, str(error))
            return None
        handler: Handler | None = HANDLERS.get(header.api_key)
        if handler is None:  # declared in the codec, not served yet
            self._refuse(frame, "not served")
            return None
        context = RequestContext(header, self.client_host, self.local_host)
        task = asyncio.get_running_loop().create_task(self._handle(handler, context, body))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    def _refuse(self, frame: bytes, why: str) -> None:
        header = _peek_header(frame)
        what = f"api key {header.api_key} v{header.api_version}" if header else "a frame"
        logger.warning("closing connection from %s: %s: %s", self.client_host, what, why)

    async def _handle(
        self, handler: Handler, context: RequestContext, body: Any
    ) -> _Frame | None:
        response = await handler(self.server.broker, context, body)
        if response is None:  # Produce with acks=0: no answer
            return None
        api = APIS[context.header.api_key]
        return encode_response_parts(api, context.version, context.header.correlation_id,
                                     response)

    async def _respond(self) -> None:
        budget = self.server.budget
        assert budget is not None
        failed = False
        while (item := await self.pending.get()) is not None:
            task, size = item
            try:
                if failed:
                    task.cancel()
                    continue
                response = await task
                if response is not None:
                    for part in response:
                        self.writer.write(part)
                    await self.writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                failed = True
            except Exception:
                logger.exception("closing connection from %s: a handler failed",
                                 self.client_host)
                failed = True
                self.writer.close()
            finally:
                budget.give(size)


async def _ready(response: bytes) -> _Frame:
    return [response]


def _peek_header(frame: bytes) -> RequestHeader | None:
    reader = Reader(frame)
    try:
        return RequestHeader(reader.int16(), reader.int16(), reader.int32(), None)
    except ProtocolError:
        return None
