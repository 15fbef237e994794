"""Typed Kafka requests and responses, one module per API, named after it.

Each module opens with the versions streamer serves and defines ``API``; field layouts
follow Kafka's message schemas (``tests/log/protocol`` checks them version by version).
"""
