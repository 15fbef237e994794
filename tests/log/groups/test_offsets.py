"""OffsetCommit and OffsetFetch: who may commit, what is kept, and that it is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamer.log import Log, MemoryFilesystem, TopicConfig
from streamer.log.groups import OFFSETS_TOPIC, CommittedOffset, GroupCoordinator
from streamer.log.groups.offsets import (
    decode_key,
    decode_value,
    encode_key,
    encode_value,
    partition_for,
)
from streamer.log.protocol.error_codes import ErrorCode

from ..batches import Record, build_batch, read_all
from .consumers import GROUP, SIMPLE, Consumer, fetched, form_group, run, simple_commit


def test_a_member_commits_and_fetches_its_offsets(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            member = Consumer(groups, "member")
            await form_group([member])
            results = await groups.commit_offsets(
                GROUP, member.generation_id, member.member_id, None,
                [("events", 0, 42, 3, "note"), ("events", 1, 7, -1, None)],
            )  # fmt: skip
            assert [r.error_code for r in results] == [ErrorCode.NONE, ErrorCode.NONE]
            answer = groups.fetch_offsets(GROUP, [("events", 0), ("events", 2), ("other", 0)])
            assert answer.error_code is ErrorCode.NONE
            assert [tuple(o) for o in answer.partitions] == [
                ("events", 0, 42, 3, "note"),
                ("events", 2, -1, -1, ""),
                ("other", 0, -1, -1, ""),
            ]
            assert fetched(groups) == {("events", 0): 42, ("events", 1): 7}
            assert groups.fetch_offsets("unknown", None).partitions == ()

    run(scenario())


def test_who_may_commit(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log, initial_rebalance_delay_ms=50) as groups:
            # A consumer outside group management may commit to a group without members.
            assert await simple_commit(groups, "standalone", ("events", 0, 5)) == [
                ErrorCode.NONE
            ]
            one, two = Consumer(groups, "one"), Consumer(groups, "two")
            await asyncio.gather(one.join(), two.join())
            # CompletingRebalance: partitions are about to move, commits wait for the sync.
            assert await one.commit("events", 0, 1) is ErrorCode.REBALANCE_IN_PROGRESS
            await asyncio.gather(one.sync([]), two.sync([]))
            assert await one.commit("events", 0, 1) is ErrorCode.NONE
            assert await simple_commit(groups, GROUP, ("events", 0, 9)) == [
                ErrorCode.UNKNOWN_MEMBER_ID
            ]
            stale = Consumer(groups, "stale")
            stale.member_id, stale.generation_id = one.member_id, 0
            assert await stale.commit("events", 0, 2) is ErrorCode.ILLEGAL_GENERATION
            outsider = Consumer(groups, "outsider", group_id="never-joined")
            outsider.member_id, outsider.generation_id = "someone", 3
            assert await outsider.commit("events", 0, 2) is ErrorCode.ILLEGAL_GENERATION
            # A member may still commit while the group prepares a rebalance.
            two.leave()
            assert await one.commit("events", 0, 3) is ErrorCode.NONE
            assert fetched(groups) == {("events", 0): 3}

    run(scenario())


def test_metadata_over_the_limit_fails_only_its_partition(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            results = await groups.commit_offsets(
                GROUP, *SIMPLE,
                [("t", 0, 1, -1, "m" * 4096), ("t", 1, 1, -1, "m" * 4097), ("", 0, 1, -1, None),
                 ("t", -1, 1, -1, None)],
            )  # fmt: skip
            assert [r.error_code for r in results] == [
                ErrorCode.NONE,
                ErrorCode.OFFSET_METADATA_TOO_LARGE,
                ErrorCode.INVALID_TOPIC_EXCEPTION,
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ]
            assert fetched(groups) == {("t", 0): 1}
            assert groups.fetch_offsets(GROUP, [("t", 0)]).partitions[0].metadata == "m" * 4096

    run(scenario())


def test_a_commit_larger_than_the_topic_allows_is_refused_whole(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            offsets = [("t", p, 1, -1, "m" * 4096) for p in range(300)]  # ~1.2 MB > 1 MB
            results = await groups.commit_offsets(GROUP, *SIMPLE, offsets)
            assert {r.error_code for r in results} == {ErrorCode.INVALID_COMMIT_OFFSET_SIZE}
            assert fetched(groups) == {}

    run(scenario())


def test_offsets_survive_a_restart_of_a_durable_log(tmp_path: Path) -> None:
    async def first_life() -> None:
        with Log.open(tmp_path) as log:
            async with GroupCoordinator(log) as groups:
                member = Consumer(groups, "member")
                await form_group([member])
                assert await member.commit("events", 0, 10) is ErrorCode.NONE
                assert await member.commit("events", 0, 11) is ErrorCode.NONE
                await simple_commit(groups, "doomed", ("events", 0, 99))
                (deleted,) = await groups.delete_groups(["doomed"])
                assert deleted.error_code is ErrorCode.NONE

    async def second_life() -> None:
        with Log.open(tmp_path) as log:
            async with GroupCoordinator(log) as groups:
                assert fetched(groups) == {("events", 0): 11}
                assert fetched(groups, "doomed") == {}
                (description,) = groups.describe_groups([GROUP])
                assert (description.state, description.members) == ("Empty", ())
                # The group is known again; its members rejoin and carry on.
                member = Consumer(groups, "member")
                await form_group([member])
                assert groups.fetch_offsets(GROUP, [("events", 0)]).partitions[0].offset == 11

    run(first_life())
    run(second_life())


def test_an_acknowledged_commit_survives_a_crash() -> None:
    fs = MemoryFilesystem()

    async def before_the_crash() -> None:
        log = Log.open("/data", fs=fs, default_config=TopicConfig())  # flush.ms=0: fsync
        async with GroupCoordinator(log) as groups:
            assert await simple_commit(groups, GROUP, ("events", 3, 1234)) == [ErrorCode.NONE]

    async def after_the_crash(survivor: MemoryFilesystem) -> None:
        with Log.open("/data", fs=survivor) as log:
            async with GroupCoordinator(log) as groups:
                assert fetched(groups) == {("events", 3): 1234}

    run(before_the_crash())
    run(after_the_crash(fs.crash()))


def test_a_failed_fsync_answers_not_coordinator_and_keeps_the_old_offset() -> None:
    fs = MemoryFilesystem()

    async def scenario() -> None:
        with Log.open("/data", fs=fs, default_config=TopicConfig()) as log:
            async with GroupCoordinator(log) as groups:
                await simple_commit(groups, GROUP, ("events", 0, 1))
                fs.fail_next_fsync = OSError(5, "Input/output error")
                assert await simple_commit(groups, GROUP, ("events", 0, 2)) == [
                    ErrorCode.NOT_COORDINATOR
                ]
                assert fetched(groups) == {("events", 0): 1}
                # The partition is offline until reopened, as after any failed fsync.
                assert await simple_commit(groups, GROUP, ("events", 0, 3)) == [
                    ErrorCode.NOT_COORDINATOR
                ]

    run(scenario())


def test_concurrent_commits_apply_in_log_order(tmp_path: Path) -> None:
    async def commit_many() -> None:
        with Log.open(tmp_path) as log:
            async with GroupCoordinator(log) as groups:
                await asyncio.gather(
                    *(simple_commit(groups, GROUP, ("events", 0, n)) for n in range(50))
                )
                assert fetched(groups) == {("events", 0): 49}

    async def replay() -> None:
        with Log.open(tmp_path) as log:
            async with GroupCoordinator(log) as groups:
                assert fetched(groups) == {("events", 0): 49}

    run(commit_many())
    run(replay())


def test_records_use_kafkas_offsets_format(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            await groups.commit_offsets(GROUP, *SIMPLE, [("events", 2, 77, 5, "meta")])
        (record,) = read_all(log.partition(OFFSETS_TOPIC, 0))
        assert record.key == b"\x00\x01\x00\x05group\x00\x06events\x00\x00\x00\x02"
        assert record.value is not None
        version, offset, epoch = b"\x00\x03", (77).to_bytes(8, "big"), (5).to_bytes(4, "big")
        assert record.value[:20] == version + offset + epoch + b"\x00\x04meta"
        assert decode_value(record.value)[:3] == (77, 5, "meta")
        assert log.topic(OFFSETS_TOPIC).config.compact

    run(scenario())


def test_the_replay_skips_records_it_cannot_read(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            await simple_commit(groups, GROUP, ("events", 0, 8))
        group_metadata_key = b"\x00\x02\x00\x05group"  # Kafka's kind, not kept here
        log.partition(OFFSETS_TOPIC, 0).append(
            build_batch([
                Record(b"junk", b"junk"),
                Record(group_metadata_key, b"whatever"),
                Record(encode_key(GROUP, "events", 1), b"\x00\x09 unknown version"),
            ])
        )  # fmt: skip
        async with GroupCoordinator(log) as groups:
            assert fetched(groups) == {("events", 0): 8}
            assert groups.offsets.skipped_records == 2

    run(scenario())


def test_key_and_value_codec_round_trip() -> None:
    key = encode_key("gröup", "tópic", 12)
    assert decode_key(key) == ("gröup", "tópic", 12)
    committed = CommittedOffset(2**40, 7, "métadata", 1_700_000_000_000)
    assert decode_value(encode_value(committed)) == committed
    version_1 = b"\x00\x01" + (5).to_bytes(8, "big") + b"\x00\x00" + bytes(16)
    assert decode_value(version_1) == CommittedOffset(5, -1, "", 0)


def test_groups_land_on_kafkas_partition() -> None:
    assert partition_for("abc", 50) == 96354 % 50  # "abc".hashCode() == 96354
    assert partition_for("polygenelubricants", 7) == 0  # hashCode() == Integer.MIN_VALUE
    assert partition_for("hello", 1_000) == 99162322 % 1_000
    assert {partition_for(f"group-{n}", 1) for n in range(20)} == {0}


def test_an_existing_offsets_topic_keeps_its_partition_count(log: Log) -> None:
    log.create_topic(OFFSETS_TOPIC, 3, {"cleanup.policy": "compact"})

    async def scenario() -> None:
        async with GroupCoordinator(log, offsets_partitions=1) as groups:
            assert groups.offsets.partitions == 3
            await simple_commit(groups, "abc", ("events", 0, 1))
        expected = partition_for("abc", 3)
        assert len(read_all(log.partition(OFFSETS_TOPIC, expected))) == 1

    run(scenario())
