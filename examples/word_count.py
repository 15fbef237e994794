"""Word count: lines in, a running count per word out (re-keyed by word), the counts kept
in a table (RocksDB under ./streamer-data/state, restored from its changelog on restart).

    streamer worker examples.word_count:app &
    echo "the quick brown fox jumps over the lazy dog" \
        | streamer produce word-count-lines --broker <the worker's address>
    streamer consume word-count-counts --from-beginning --format '{key} {value}' \
        --broker <the worker's address>
    streamer tables get word-count counts fox --broker <the worker's address>
"""

from __future__ import annotations

import streamer

app = streamer.App("word-count", broker="./streamer-data")
lines = app.topic("word-count-lines", value_type=str, partitions=4)
counts_topic = app.topic("word-count-counts", value_type=str)
counts = app.table("counts", default=int)


@app.agent(lines)
async def count_words(stream: streamer.Stream) -> None:
    words = stream.flat_map(lambda line: line.lower().split())
    async for word in words.group_by(lambda word: word, name="word", partitions=4):
        counts[word] += 1
        await counts_topic.send(key=word, value=str(counts[word]))
