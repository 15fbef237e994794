"""Append a few record batches to the embedded log and read them back.

Run: python examples/log_roundtrip.py [DATA_DIR]
"""

from __future__ import annotations

import struct
import sys
import tempfile

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from streamer.log import Log


def build_batch(values: list[bytes], timestamp_ms: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0,
        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
    )
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=timestamp_ms + delta, key=b"key-%d" % delta,
                       value=value, headers=[])
    return bytes(builder.build())


def main(data_dir: str) -> None:
    with Log.open(data_dir) as log:
        if not log.has_topic("greetings"):
            log.create_topic("greetings", partitions=1)
        partition = log.partition("greetings", 0)
        result = partition.append(build_batch([b"hello", b"world"], 1_700_000_000_000))
        print(f"appended offsets {result.base_offset}..{result.last_offset}")
        records = partition.read(result.base_offset).records
        position = 0
        while position < len(records):
            size = struct.unpack_from(">i", records, position + 8)[0] + 12
            for record in DefaultRecordBatch(records[position : position + size]):
                print(record.offset, record.key, record.value)
            position += size


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="streamer-example-"))
