"""Errors of :mod:`streamer.operators`."""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = ["JoinError", "WindowError"]


class WindowError(StreamerError):
    """A window definition or aggregation that cannot work (a size ≤ 0, a hopping step
    larger than its size, a session aggregate without merge), or a window store holding
    entries the aggregation did not write. The message names the argument and what to pass
    instead."""


class JoinError(StreamerError):
    """A join that cannot work (an unknown ``how``, an empty window, a negative grace), or a
    join store holding entries the join did not write. The message names the argument."""
