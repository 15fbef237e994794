"""streamer: stream processing for Python on its own embedded, Kafka-compatible log.

::

    import streamer

    app = streamer.App("hello", broker="memory://")
    greetings = app.topic("greetings", value_type=str)

    @app.agent(greetings)
    async def shout(stream):
        async for text in stream:
            print(text.upper())
"""

from __future__ import annotations

from streamer.agents import Agent, AgentError
from streamer.app import App
from streamer.errors import StreamerError
from streamer.events import Event, TopicPartition
from streamer.serialization import SerializationError
from streamer.streams import Stream
from streamer.topics import Topic

__all__ = [
    "Agent",
    "AgentError",
    "App",
    "Event",
    "SerializationError",
    "Stream",
    "StreamerError",
    "Topic",
    "TopicPartition",
    "__version__",
]

__version__ = "0.1.0"
