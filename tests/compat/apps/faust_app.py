"""A faust-streaming word count, run unmodified against ``streamer broker``.

``split`` reads lines from the input topic and sends each word, keyed by itself, to a
repartition topic; ``count`` keeps the counts in an ``app.Table`` held in memory, so a
restarted worker rebuilds it from the table's changelog topic, and sends each new count to
the output topic. Settings come from the environment, so the test can point the worker at
its broker (``--without-web``: the worker command turns the web server on otherwise)::

    STREAMER_BOOTSTRAP=127.0.0.1:9092 FAUST_DATADIR=/tmp/wc \\
        python -m tests.compat.apps.faust_app worker --without-web --loglevel=info
"""

from __future__ import annotations

import os

import faust

INPUT_TOPIC = os.environ.get("WORDCOUNT_INPUT", "faust-lines")
OUTPUT_TOPIC = os.environ.get("WORDCOUNT_OUTPUT", "faust-counts")
PARTITIONS = int(os.environ.get("FAUST_PARTITIONS", "1"))  # of the words topic and the table

app = faust.App(
    "faust-wordcount",
    broker=f"kafka://{os.environ.get('STREAMER_BOOTSTRAP', '127.0.0.1:9092')}",
    datadir=os.environ.get("FAUST_DATADIR", "faust-data"),
    store="memory://",
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    producer_acks=-1,
)

lines = app.topic(INPUT_TOPIC, key_type=bytes, value_type=bytes, value_serializer="raw")
words = app.topic("faust-words", key_type=str, value_type=str, key_serializer="raw",
                  value_serializer="raw", partitions=PARTITIONS)
counts_out = app.topic(OUTPUT_TOPIC, key_type=str, value_type=bytes, key_serializer="raw",
                       value_serializer="raw")
word_counts = app.Table("word-counts", default=int, partitions=PARTITIONS)


@app.agent(lines)
async def split(stream: faust.StreamT[bytes]) -> None:
    async for line in stream:
        for word in line.decode().split():
            await words.send(key=word, value=word)


@app.agent(words)
async def count(stream: faust.StreamT[str]) -> None:
    async for word in stream:
        word_counts[word] += 1
        await counts_out.send(key=word, value=str(word_counts[word]).encode())


if __name__ == "__main__":
    app.main()
