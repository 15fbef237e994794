"""streamer: stream processing for Python on its own embedded, Kafka-compatible log."""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["StreamerError", "__version__"]

__version__ = "0.1.0"
