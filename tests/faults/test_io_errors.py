"""Failed writes and fsyncs (EIO, a full disk), then a power cut.

A failing write must leave nothing behind; a failing fsync is reported as
:class:`LogStorageError`; either way the log keeps working and the producer's retry does
the right thing (an idempotent retry of a batch that did reach the file is a duplicate).
After a power cut every batch whose append returned is still there, intact.
"""

from __future__ import annotations

import errno
import random

import pytest
from streamer.log import Log, LogStorageError, ManualClock, MemoryFilesystem

from .fault_helpers import TOPIC, Workload, assert_same_batch, stored_batches


@pytest.mark.parametrize("seed", range(60))
def test_failed_writes_and_fsyncs_then_power_cut(seed: int) -> None:
    rng = random.Random(seed)
    workload = Workload(seed)
    fs = MemoryFilesystem()
    log = Log.open("/data", fs=fs, clock=ManualClock())
    config = {"segment.bytes": rng.choice([1024, 4096]), "retention.ms": -1}
    log.create_topic(TOPIC, 1, config)
    partition = log.partition(TOPIC, 0)
    stored: list[int] = []  # workload index of each batch in the log, in order
    returned = 0  # how many of them were in the log when the last successful append returned
    for index in range(40):
        batch = workload.batch(index)
        for attempt in range(4):  # the producer retries a failed produce
            fault = rng.random() if attempt < 3 else 1.0
            if fault < 0.15:
                fs.fail_next_write = OSError(errno.EIO, "injected write error")
            elif fault < 0.3:
                fs.fail_next_fsync = OSError(errno.EIO, "injected fsync error")
            elif fault < 0.35:
                fs.capacity_bytes = fs.used_bytes() + rng.randrange(len(batch))
            end = partition.log_end_offset
            try:
                result = partition.append(batch)
            except LogStorageError:
                # Not acknowledged; the batch is in the log only if it reached the file.
                if partition.log_end_offset != end:
                    assert partition.log_end_offset == end + workload.next_offset(index) - (
                        workload.base_offset(index)
                    )
                    stored.append(index)
                if partition.failure is not None:  # a failed fsync: recover before retrying
                    written_end = partition.log_end_offset
                    partition = log.reopen_partition(TOPIC, 0)
                    assert partition.failure is None
                    assert partition.log_end_offset == written_end  # intact bytes are kept
                continue
            finally:
                fs.fail_next_write = fs.fail_next_fsync = None
                fs.capacity_bytes = None
            if not result.duplicate:
                assert result.base_offset == end
                stored.append(index)
            returned = len(stored)
            break
        else:
            raise AssertionError(f"batch {index} failed without an injected fault")

    survivor = fs.crash(rng)
    with Log.open("/data", fs=survivor, clock=ManualClock()) as log:
        partition = log.partition(TOPIC, 0)
        batches = stored_batches(partition)
        assert len(batches) >= returned, "an acknowledged batch was lost"
        assert len(batches) <= len(stored)
        offset = 0
        for position, batch in enumerate(batches):
            original = workload.batch(stored[position])
            assert_same_batch(batch, original, offset)
            offset += workload.next_offset(stored[position]) - workload.base_offset(
                stored[position]
            )
        assert partition.log_end_offset == offset
