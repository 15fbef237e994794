"""A quixstreams word count, run unmodified against ``streamer broker``.

Lines from the input topic are split into words, regrouped by word (a repartition topic),
counted in RocksDB state (a compacted changelog topic) and each new count is written to the
output topic as JSON ``{"word": ..., "count": ...}``. Settings come from the environment::

    STREAMER_BOOTSTRAP=127.0.0.1:9092 QUIX_STATE_DIR=/tmp/wc python -m tests.compat.apps.quix_app
"""

from __future__ import annotations

import os
from typing import Any

from quixstreams import Application, State

INPUT_TOPIC = os.environ.get("WORDCOUNT_INPUT", "quix-lines")
OUTPUT_TOPIC = os.environ.get("WORDCOUNT_OUTPUT", "quix-counts")


def count(row: dict[str, Any], state: State[str, int]) -> dict[str, Any]:
    total = state.get("count", 0) + 1
    state.set("count", total)
    return {"word": row["word"], "count": total}


def main() -> None:
    app = Application(
        broker_address=os.environ.get("STREAMER_BOOTSTRAP", "127.0.0.1:9092"),
        consumer_group="quix-wordcount",
        auto_offset_reset="earliest",
        state_dir=os.environ.get("QUIX_STATE_DIR", "quix-state"),
        commit_interval=0.5,
    )
    lines = app.topic(INPUT_TOPIC, value_deserializer="str")
    counts = app.topic(OUTPUT_TOPIC, value_serializer="json")
    words = app.dataframe(lines)
    words = words.apply(lambda line: [{"word": w} for w in line.split()], expand=True)
    words = words.group_by("word")
    words.apply(count, stateful=True).to_topic(counts)
    app.run()


if __name__ == "__main__":
    main()
