"""streamer.operators: windows, joins, aggregations. Not built yet: see docs/architecture.md."""
