"""Child process of test_kill.py: append the fault workload until killed.

Usage: ``python appender.py ROOT SEED ACK_FILE``. Prints ``ready`` once imported, then opens
the log at ROOT (recovering it), continues the workload from the batch after the last one
in the log, and after each append returns (fsynced: flush.ms=0) writes ``index base_offset``
to ACK_FILE with one write(2), so an acknowledged line is in the kernel before the next
append starts. It never stops on its own; the parent SIGKILLs it.
"""

from __future__ import annotations

import os
import sys

from fault_helpers import KILL_TOPIC_CONFIG, TOPIC, Workload
from streamer.log import Log
from streamer.log.batch import parse_header


def main() -> None:
    root, seed, ack_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workload = Workload(seed)
    ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    print("ready", flush=True)
    log = Log.open(root)
    if not log.has_topic(TOPIC):
        log.create_topic(TOPIC, 1, KILL_TOPIC_CONFIG)
    partition = log.partition(TOPIC, 0)
    end = partition.log_end_offset
    index = 0
    if end > 0:
        last = parse_header(partition.read(end - 1).records)
        index = workload.index_of(last.base_offset) + 1
        if workload.base_offset(index) != end:
            sys.exit(f"the log ends at {end}, inside workload batch {index - 1}")
    while True:
        result = partition.append(workload.batch(index))
        os.write(ack, f"{index} {result.base_offset}\n".encode())
        index += 1


if __name__ == "__main__":
    main()
