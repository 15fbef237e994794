"""streamer.state: state stores and changelogs. Not built yet: see docs/architecture.md."""
