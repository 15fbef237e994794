"""Errors of :mod:`streamer.state`."""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["StoreError", "TableError"]


class StoreError(StreamerError):
    """A store could not be opened, read or written (the path and the reason are named)."""


class TableError(StreamerError):
    """A table was used in a way that cannot work: a key in a partition this worker does not
    own, a table updated from a stream that is not partitioned like it."""
