"""Topics as an app declares them: a name, key and value types, partitions, configs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import StreamerError
from .events import Headers
from .serialization import Codec, SerializationError, codec_for

if TYPE_CHECKING:
    from .app import App
    from .streams import Stream

__all__ = ["Topic", "normalize_headers"]


class _AutoKey:
    """The default key codec: bytes as they are, str as UTF-8, anything else as JSON; keys
    read back as str when they are UTF-8, else as bytes."""

    _json = codec_for(dict)

    def dumps(self, value: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        return self._json.dumps(value)

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data


AUTO_KEY = _AutoKey()


class Topic:
    """A topic of an app; ``await topic.send(key=..., value=...)`` writes to it."""

    def __init__(
        self,
        app: App,
        name: str,
        *,
        key_type: Any = None,
        value_type: Any = bytes,
        partitions: int | None = None,
        config: Mapping[str, Any] | None = None,
        internal: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.key_codec: Codec = AUTO_KEY if key_type is None else codec_for(key_type)
        self.value_type = value_type
        self.value_codec: Codec = codec_for(value_type)
        self.partitions = partitions
        self.config = {key: str(value) for key, value in (config or {}).items()}
        self.internal = internal

    def __repr__(self) -> str:
        return f"<Topic {self.name}>"

    async def send(
        self,
        *,
        key: Any = None,
        value: Any = None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timestamp: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue a record; it is durable once the app's next checkpoint has flushed.

        ``timestamp`` is in milliseconds (default: now); ``partition`` defaults to the one
        Kafka's partitioner picks for the key (round-robin without a key).
        """
        try:
            key_bytes = self.key_codec.dumps(key)
            value_bytes = self.value_codec.dumps(value)
        except SerializationError as error:
            raise SerializationError(f"topic {self.name!r}: {error}") from None
        await self.app.send_raw(
            self.name, key_bytes, value_bytes, normalize_headers(headers), timestamp, partition
        )

    def stream(self) -> Stream:
        """A stream of this topic, to merge into an agent's stream."""
        from .streams import Stream, TopicSource

        return Stream(self.app, TopicSource(self.app, self))


def normalize_headers(
    headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
) -> Headers:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    normalized = []
    for name, value in items:
        if isinstance(value, str):
            value = value.encode()
        elif not isinstance(value, (bytes, type(None))):
            raise StreamerError(f"header {name!r}: values are bytes or str, not {type(value)}")
        normalized.append((str(name), value))
    return tuple(normalized)
