"""streamer.cli: the ``streamer`` command."""
