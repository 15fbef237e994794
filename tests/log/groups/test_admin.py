"""DescribeGroups, ListGroups, DeleteGroups and the statistics snapshot."""

from __future__ import annotations

import asyncio

from streamer.log import Log
from streamer.log.groups import DeleteResult, GroupCoordinator, ListedGroup
from streamer.log.protocol.error_codes import ErrorCode

from .consumers import GROUP, Consumer, fetched, form_group, run, simple_commit


def test_describe_shows_members_and_assignments_only_when_stable(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log, initial_rebalance_delay_ms=50) as groups:
            one, two = Consumer(groups, "one"), Consumer(groups, "two")
            await asyncio.gather(one.join(), two.join())
            (completing,) = groups.describe_groups([GROUP])
            assert completing.state == "CompletingRebalance"
            assert completing.protocol_name == ""  # Kafka names it only when Stable
            assert {m.metadata for m in completing.members} == {b""}
            await form_group([one, two])
            (stable, unknown) = groups.describe_groups([GROUP, "unknown"])
            assert (stable.error_code, stable.state) == (ErrorCode.NONE, "Stable")
            assert (stable.protocol_type, stable.protocol_name) == ("consumer", "range")
            by_client = {m.client_id: m for m in stable.members}
            assert by_client["one"].member_id == one.member_id
            assert by_client["one"].client_host == "/127.0.0.1"
            assert by_client["one"].metadata == b"range-metadata"
            assert by_client["two"].assignment == b"two"
            assert (unknown.error_code, unknown.state, unknown.members) == (
                ErrorCode.NONE, "Dead", ()
            )

    run(scenario())


def test_list_groups_with_and_without_a_state_filter(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            await form_group([Consumer(groups, "member")])
            await simple_commit(groups, "offsets-only", ("events", 0, 1))
            everything = groups.list_groups()
            assert everything.error_code is ErrorCode.NONE
            assert everything.groups == (
                ListedGroup(GROUP, "consumer", "Stable"),
                ListedGroup("offsets-only", "", "Empty"),
            )
            assert groups.list_groups(["empty"]).groups == (
                ListedGroup("offsets-only", "", "Empty"),
            )
            assert groups.list_groups(["Stable", "Dead"]).groups == (
                ListedGroup(GROUP, "consumer", "Stable"),
            )

    run(scenario())


def test_delete_groups(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            member = Consumer(groups, "member")
            await form_group([member])
            await member.commit("events", 0, 4)
            await simple_commit(groups, "idle", ("events", 0, 1), ("events", 1, 2))
            results = await groups.delete_groups([GROUP, "idle", "unknown"])
            assert results == (
                DeleteResult(GROUP, ErrorCode.NON_EMPTY_GROUP),
                DeleteResult("idle", ErrorCode.NONE),
                DeleteResult("unknown", ErrorCode.GROUP_ID_NOT_FOUND),
            )
            assert fetched(groups, "idle") == {}
            assert fetched(groups) == {("events", 0): 4}
            member.leave()  # the group is now empty but keeps its offsets
            assert groups.describe_groups([GROUP])[0].state == "Empty"
            assert groups.list_groups().groups == (ListedGroup(GROUP, "consumer", "Empty"),)
            assert await groups.delete_groups([GROUP]) == (DeleteResult(GROUP, ErrorCode.NONE),)
            assert groups.list_groups().groups == ()
            assert groups.describe_groups([GROUP])[0].state == "Dead"

    run(scenario())


def test_a_group_being_deleted_refuses_joins_and_commits(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log) as groups:
            await simple_commit(groups, GROUP, ("events", 0, 1))
            deleting = asyncio.create_task(groups.delete_groups([GROUP]))
            await asyncio.sleep(0)  # marked Dead; the tombstones are being written
            joined = await Consumer(groups, "late").join_once()
            assert joined.error_code is ErrorCode.COORDINATOR_NOT_AVAILABLE
            assert await simple_commit(groups, GROUP, ("events", 0, 2)) == [
                ErrorCode.COORDINATOR_NOT_AVAILABLE
            ]
            assert (await deleting)[0].error_code is ErrorCode.NONE
            assert (await Consumer(groups, "later").join()).generation_id == 1

    run(scenario())


def test_statistics_snapshot(log: Log) -> None:
    async def scenario() -> None:
        async with GroupCoordinator(log, initial_rebalance_delay_ms=50) as groups:
            consumers = [Consumer(groups, f"c{i}") for i in range(2)]
            await form_group(consumers)
            await consumers[0].commit("events", 0, 1)
            stats = groups.statistics()
            assert stats.offsets_topic == "__consumer_offsets"
            assert (stats.members, stats.committed_offsets, stats.rebalances) == (2, 1, 1)
            (group,) = stats.groups
            assert (group.group_id, group.state, group.generation_id) == (GROUP, "Stable", 1)
            assert (group.protocol_type, group.protocol_name) == ("consumer", "range")
            consumers[1].leave()
            assert groups.statistics().groups[0].state == "PreparingRebalance"
            assert stats.groups[0].state == "Stable"  # a snapshot does not change

    run(scenario())


def test_admin_calls_answer_codes_before_start(log: Log) -> None:
    groups = GroupCoordinator(log)
    assert groups.list_groups().error_code is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert groups.describe_groups([GROUP])[0].error_code is (
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    )
    assert groups.fetch_offsets(GROUP, None).error_code is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    assert groups.heartbeat(GROUP, 1, "m", None) is ErrorCode.COORDINATOR_NOT_AVAILABLE
