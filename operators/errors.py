"""Errors of :mod:`streamer.operators`."""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["WindowError"]


class WindowError(StreamerError):
    """A window definition or aggregation that cannot work (a size ≤ 0, a hopping step
    larger than its size, a session aggregate without merge), or a window store holding
    entries the aggregation did not write. The message names the argument and what to pass
    instead."""
