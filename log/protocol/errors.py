"""Errors of the Kafka-protocol codec; the tree is drawn in :mod:`streamer.errors`."""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["ProtocolDecodeError", "ProtocolError", "UnknownApiError", "UnsupportedVersionError"]


class ProtocolError(StreamerError):
    """A frame that is not a valid Kafka request or response."""


class ProtocolDecodeError(ProtocolError):
    """The bytes do not decode: too short, a bad length, invalid UTF-8, bytes left over."""


class UnknownApiError(ProtocolError):
    """The request's API key is not one streamer serves."""

    def __init__(self, api_key: int) -> None:
        super().__init__(f"unknown API key {api_key}")
        self.api_key = api_key


class UnsupportedVersionError(ProtocolError):
    """The API is known but not at the version asked for."""

    def __init__(self, api_name: str, version: int, versions: tuple[int, int]) -> None:
        super().__init__(
            f"{api_name} v{version} is not supported (streamer serves v{versions[0]}-{versions[1]})"
        )
        self.version = version
