"""JoinGroup, SyncGroup, Heartbeat and LeaveGroup against a real coordinator and log."""

from __future__ import annotations

import asyncio
import contextlib

from streamer.log import Log, ManualClock
from streamer.log.groups import GroupCoordinator
from streamer.log.protocol.error_codes import ErrorCode

from .consumers import GROUP, Consumer, form_group, run

# Long enough for gathered joins to meet, short enough for a fast suite.
DELAY_MS = 50


def coordinator(log: Log, **settings: int) -> GroupCoordinator:
    settings.setdefault("min_session_timeout_ms", 10)
    return GroupCoordinator(log, **settings)


def test_single_member_joins_syncs_and_heartbeats(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log) as groups:
            alone = Consumer(groups, "alone")
            joined = await alone.join()
            assert joined.generation_id == 1
            assert joined.leader_id == joined.member_id == alone.member_id
            assert joined.member_id.startswith("alone-")
            assert (joined.protocol_type, joined.protocol_name) == ("consumer", "range")
            assert [(m.member_id, m.metadata) for m in joined.members] == [
                (alone.member_id, b"range-metadata")
            ]
            synced = await alone.sync([(alone.member_id, b"partitions 0-3")])
            assert synced.error_code is ErrorCode.NONE
            assert synced.assignment == b"partitions 0-3"
            assert alone.heartbeat() is ErrorCode.NONE
            (description,) = groups.describe_groups([GROUP])
            assert description.state == "Stable"
            assert description.members[0].assignment == b"partitions 0-3"

    run(scenario())


def test_a_new_member_first_gets_member_id_required(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log) as groups:
            newcomer = Consumer(groups, "newcomer")
            first = await newcomer.join_once()
            assert first.error_code is ErrorCode.MEMBER_ID_REQUIRED
            assert first.member_id.startswith("newcomer-")
            assert first.generation_id == -1
            assert groups.describe_groups([GROUP])[0].members == ()  # not a member yet
            second = await newcomer.join_once()
            assert second.error_code is ErrorCode.NONE
            assert second.member_id == first.member_id

    run(scenario())


def test_three_members_leader_gets_everyones_metadata_and_relays_assignments(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            consumers = [
                Consumer(groups, f"c{i}", protocols=[("range", f"meta-{i}".encode())])
                for i in range(3)
            ]
            assignments = await form_group(consumers)
            assert assignments == {"c0": b"c0", "c1": b"c1", "c2": b"c2"}
            (leader,) = [c for c in consumers if c.is_leader]
            assert leader.joined is not None
            seen = {m.member_id: m.metadata for m in leader.joined.members}
            assert seen == {c.member_id: f"meta-{c.name[1]}".encode() for c in consumers}
            for follower in (c for c in consumers if c is not leader):
                assert follower.joined is not None and follower.joined.members == ()
                assert follower.joined.leader_id == leader.member_id
            assert {c.generation_id for c in consumers} == {1}

    run(scenario())


def test_a_fourth_member_rebalances_the_group(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            consumers = [Consumer(groups, f"c{i}") for i in range(3)]
            await form_group(consumers)
            leader_id = next(c.member_id for c in consumers if c.is_leader)
            fourth = Consumer(groups, "c3")
            first = await fourth.join_once()  # MEMBER_ID_REQUIRED: not a member yet
            assert first.error_code is ErrorCode.MEMBER_ID_REQUIRED
            assert {c.heartbeat() for c in consumers} == {ErrorCode.NONE}
            joining = asyncio.create_task(fourth.join_once())
            await asyncio.sleep(0)
            assert not joining.done()  # parked until the others rejoin
            assert {c.heartbeat() for c in consumers} == {ErrorCode.REBALANCE_IN_PROGRESS}
            (description,) = groups.describe_groups([GROUP])
            assert description.state == "PreparingRebalance"
            await asyncio.gather(*(c.join() for c in consumers))
            assert (await joining).error_code is ErrorCode.NONE
            everyone = [*consumers, fourth]
            assert {c.generation_id for c in everyone} == {2}
            assert next(c for c in everyone if c.is_leader).member_id == leader_id
            assigned = await _sync_all(everyone)
            assert {c.name: assigned[c] for c in everyone} == {
                "c0": b"c0", "c1": b"c1", "c2": b"c2", "c3": b"c3"
            }

    run(scenario())


async def _sync_all(consumers: list[Consumer]) -> dict[Consumer, bytes]:
    leader = next(c for c in consumers if c.is_leader)
    plan = [(c.member_id, c.name.encode()) for c in consumers]
    followers = [c for c in consumers if c is not leader]
    results = await asyncio.gather(*(c.sync() for c in followers), leader.sync(plan))
    assert {r.error_code for r in results} == {ErrorCode.NONE}
    return {c: r.assignment for c, r in zip([*followers, leader], results, strict=True)}


def test_leaving_rebalances_the_rest(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            stays, leaves = Consumer(groups, "stays"), Consumer(groups, "leaves")
            await form_group([stays, leaves])
            assert leaves.leave() is ErrorCode.NONE
            assert leaves.heartbeat() is ErrorCode.UNKNOWN_MEMBER_ID
            assert stays.heartbeat() is ErrorCode.REBALANCE_IN_PROGRESS
            rejoined = await stays.join()
            assert rejoined.generation_id == 2
            assert rejoined.leader_id == stays.member_id
            assert [m.member_id for m in rejoined.members] == [stays.member_id]
            assert leaves.leave() is ErrorCode.UNKNOWN_MEMBER_ID  # already gone

    run(scenario())


def test_the_last_member_leaving_empties_the_group(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log) as groups:
            alone = Consumer(groups, "alone")
            await form_group([alone])
            alone.leave()
            assert groups.describe_groups([GROUP])[0].state == "Dead"  # nothing to keep
            assert await alone.commit("events", 0, 5) is ErrorCode.ILLEGAL_GENERATION
            assert groups.fetch_offsets(GROUP, None).partitions == ()

    run(scenario())


def test_a_silent_member_expires_and_the_group_rebalances_without_it(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            alive = Consumer(groups, "alive", session_timeout_ms=200)
            silent = Consumer(groups, "silent", session_timeout_ms=200)
            await form_group([alive, silent])
            answers = set()
            for _ in range(8):  # 400 ms of heartbeats every 50 ms
                await asyncio.sleep(0.05)
                answers.add(alive.heartbeat())
            assert ErrorCode.REBALANCE_IN_PROGRESS in answers
            rejoined = await alive.join()
            assert [m.member_id for m in rejoined.members] == [alive.member_id]
            assert rejoined.generation_id == 2
            assert silent.heartbeat() is ErrorCode.UNKNOWN_MEMBER_ID
            assert groups.statistics().groups[0].members == 1

    run(scenario())


def test_the_rebalance_timeout_drops_members_that_do_not_rejoin(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            keen = Consumer(groups, "keen", rebalance_timeout_ms=200)
            stubborn = Consumer(groups, "stubborn", rebalance_timeout_ms=200)
            await form_group([keen, stubborn])
            newcomer = Consumer(groups, "newcomer", rebalance_timeout_ms=200)
            started = asyncio.get_running_loop().time()
            joins = asyncio.gather(newcomer.join(), keen.join())
            await asyncio.sleep(0.05)
            # Heartbeating keeps the session alive, but it is no rejoin.
            assert stubborn.heartbeat() is ErrorCode.REBALANCE_IN_PROGRESS
            new, kept = await joins
            assert asyncio.get_running_loop().time() - started >= 0.19
            assert new.generation_id == kept.generation_id == 2
            assert stubborn.heartbeat() is ErrorCode.UNKNOWN_MEMBER_ID
            assert len(next(r for r in (new, kept) if r.members).members) == 2

    run(scenario())


def test_wrong_generation_and_unknown_members_are_refused(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log) as groups:
            member = Consumer(groups, "member")
            await form_group([member])
            stale = await groups.sync_group(GROUP, 7, member.member_id, None, None, None, [])
            assert stale.error_code is ErrorCode.ILLEGAL_GENERATION
            stale_beat = groups.heartbeat(GROUP, 7, member.member_id, None)
            assert stale_beat is ErrorCode.ILLEGAL_GENERATION
            assert groups.heartbeat(GROUP, 1, "ghost", None) is ErrorCode.UNKNOWN_MEMBER_ID
            unknown = await groups.sync_group("nowhere", 1, "ghost", None, None, None, [])
            assert unknown.error_code is ErrorCode.UNKNOWN_MEMBER_ID
            ghost = Consumer(groups, "ghost")
            ghost.member_id = "ghost-1"
            assert (await ghost.join_once()).error_code is ErrorCode.UNKNOWN_MEMBER_ID
            wrong = await groups.sync_group(GROUP, 1, member.member_id, None, "connect", None, [])
            assert wrong.error_code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            assert groups.leave_group("nowhere", [("ghost", None)]).members[0].error_code is (
                ErrorCode.UNKNOWN_MEMBER_ID
            )

    run(scenario())


def test_members_without_a_common_protocol_are_refused(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log) as groups:
            await form_group([Consumer(groups, "first", protocols=[("range", b"")])])
            other = Consumer(groups, "other", protocols=[("roundrobin", b"")])
            refused = await other.join_once()
            assert refused.error_code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            connect = Consumer(groups, "connect", protocol_type="connect")
            assert (await connect.join_once()).error_code is ErrorCode.INCONSISTENT_GROUP_PROTOCOL

    run(scenario())


def test_the_protocol_most_members_prefer_is_selected(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            consumers = [
                Consumer(groups, "a", protocols=[("range", b"r"), ("sticky", b"s")]),
                Consumer(groups, "b", protocols=[("sticky", b"s"), ("range", b"r")]),
                Consumer(groups, "c", protocols=[("sticky", b"s"), ("cooperative", b"")]),
            ]
            # "cooperative" is not common and "range" is not in c's list: sticky wins.
            await asyncio.gather(*(c.join() for c in consumers))
            assert {c.joined.protocol_name for c in consumers if c.joined} == {"sticky"}
            leader = next(c for c in consumers if c.is_leader)
            assert leader.joined is not None
            assert {m.metadata for m in leader.joined.members} == {b"s"}

    run(scenario())


def test_invalid_requests_get_their_error_codes(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, group_max_size=1) as groups:
            assert (await Consumer(groups, "x", group_id="").join_once()).error_code is (
                ErrorCode.INVALID_GROUP_ID
            )
            too_short = Consumer(groups, "x", session_timeout_ms=5)
            assert (await too_short.join_once()).error_code is ErrorCode.INVALID_SESSION_TIMEOUT
            too_long = Consumer(groups, "x", session_timeout_ms=1_800_001)
            assert (await too_long.join_once()).error_code is ErrorCode.INVALID_SESSION_TIMEOUT
            no_protocols = Consumer(groups, "x", protocols=[])
            assert (await no_protocols.join_once()).error_code is (
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            )
            await Consumer(groups, "first").join()
            full = await Consumer(groups, "second").join_once()
            assert full.error_code is ErrorCode.GROUP_MAX_SIZE_REACHED

    run(scenario())


def test_requests_before_start_and_after_close(log: Log) -> None:
    async def scenario() -> None:
        groups = coordinator(log)
        early = await Consumer(groups, "early").join_once()
        assert early.error_code is ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
        await groups.start()
        first = Consumer(groups, "first")
        await form_group([first])
        second = Consumer(groups, "second")
        await second.join_once()
        parked = asyncio.create_task(second.join_once())
        await asyncio.sleep(0)
        await groups.close()
        assert (await parked).error_code is ErrorCode.NOT_COORDINATOR
        assert first.heartbeat() is ErrorCode.NOT_COORDINATOR

    run(scenario())


def test_a_follower_waits_in_sync_until_the_leader_assigns(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            one, two = Consumer(groups, "one"), Consumer(groups, "two")
            await asyncio.gather(one.join(), two.join())
            leader, follower = (one, two) if one.is_leader else (two, one)
            waiting = asyncio.create_task(follower.sync())
            await asyncio.sleep(0.02)
            assert not waiting.done()
            assert groups.describe_groups([GROUP])[0].state == "CompletingRebalance"
            assert follower.heartbeat() is ErrorCode.NONE  # allowed between join and sync
            await leader.sync([(follower.member_id, b"yours")])
            assert (await waiting).assignment == b"yours"
            assert (await leader.sync()).assignment == b""  # the leader gave itself nothing

    run(scenario())


def test_a_rebalance_during_sync_sends_the_follower_back_to_join(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            one, two = Consumer(groups, "one"), Consumer(groups, "two")
            await asyncio.gather(one.join(), two.join())
            leader, follower = (one, two) if one.is_leader else (two, one)
            waiting = asyncio.create_task(follower.sync())
            await asyncio.sleep(0)
            leader.leave()
            assert (await waiting).error_code is ErrorCode.REBALANCE_IN_PROGRESS
            assert (await follower.join()).leader_id == follower.member_id

    run(scenario())


def test_a_cancelled_join_does_not_hold_up_the_rebalance(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            stays = Consumer(groups, "stays")
            gone = Consumer(groups, "gone", session_timeout_ms=100)
            await form_group([stays, gone])
            gone.protocols = [("range", b"changed")]  # a rejoin that starts a rebalance
            rejoin = asyncio.create_task(gone.join_once())
            await asyncio.sleep(0)
            rejoin.cancel()  # its connection closed: it no longer waits, nor counts as joined
            with contextlib.suppress(asyncio.CancelledError):
                await rejoin
            started = asyncio.get_running_loop().time()
            result = await stays.join()  # completes once the session of "gone" ends
            assert asyncio.get_running_loop().time() - started >= 0.09
            assert [m.member_id for m in result.members] == [stays.member_id]

    run(scenario())


def test_static_member_restart_keeps_its_assignment_without_a_rebalance(log: Log) -> None:
    async def scenario() -> None:
        async with coordinator(log, initial_rebalance_delay_ms=DELAY_MS) as groups:
            leader = Consumer(groups, "leader")
            await form_group([leader])
            static = Consumer(groups, "static", group_instance_id="host-1")
            joining = asyncio.create_task(static.join())  # no MEMBER_ID_REQUIRED when static
            await asyncio.sleep(0)
            assert leader.heartbeat() is ErrorCode.REBALANCE_IN_PROGRESS
            await asyncio.gather(joining, leader.join())
            assert leader.is_leader and static.generation_id == 2
            assignments = {c.name: a for c, a in (await _sync_all([leader, static])).items()}
            restarted = Consumer(groups, "static", group_instance_id="host-1")
            rejoined = await restarted.join()
            assert rejoined.member_id != static.member_id
            assert rejoined.generation_id == 2  # no rebalance
            assert (await restarted.sync()).assignment == assignments["static"] == b"static"
            assert leader.heartbeat() is ErrorCode.NONE
            assert static.heartbeat() is ErrorCode.FENCED_INSTANCE_ID
            assert groups.leave_group(GROUP, [("", "host-1")]).members[0].error_code is (
                ErrorCode.NONE
            )
            assert leader.heartbeat() is ErrorCode.REBALANCE_IN_PROGRESS

    run(scenario())


def test_session_expiry_on_a_manual_clock(log: Log) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with GroupCoordinator(log, clock=clock) as groups:
            member = Consumer(groups, "member", session_timeout_ms=6_000)
            await form_group([member])
            clock.advance(5_999)
            groups.run_timers()
            assert member.heartbeat() is ErrorCode.NONE  # restarts the session
            clock.advance(5_999)
            groups.run_timers()
            assert groups.describe_groups([GROUP])[0].members != ()
            clock.advance(1)
            groups.run_timers()
            assert groups.describe_groups([GROUP])[0].state == "Dead"
            assert member.heartbeat() is ErrorCode.UNKNOWN_MEMBER_ID

    run(scenario())


def test_a_member_that_never_syncs_is_removed_after_the_rebalance_timeout(log: Log) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with GroupCoordinator(log, clock=clock) as groups:
            leader, lazy = Consumer(groups, "leader"), Consumer(groups, "lazy")
            await form_group([leader])
            await lazy.join_once()  # MEMBER_ID_REQUIRED
            joining = asyncio.create_task(lazy.join_once())
            await asyncio.sleep(0)
            await leader.join()
            await joining
            await leader.sync([(lazy.member_id, b"work")])  # lazy never asks for it
            clock.advance(5_000)
            assert {leader.heartbeat(), lazy.heartbeat()} == {ErrorCode.NONE}
            clock.advance(5_000)  # the rebalance timeout, counted from the join
            groups.run_timers()
            assert lazy.heartbeat() is ErrorCode.UNKNOWN_MEMBER_ID
            assert leader.heartbeat() is ErrorCode.REBALANCE_IN_PROGRESS

    run(scenario())


def test_pending_member_ids_expire(log: Log) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with GroupCoordinator(log, clock=clock) as groups:
            member = Consumer(groups, "member", session_timeout_ms=6_000)
            assert (await member.join_once()).error_code is ErrorCode.MEMBER_ID_REQUIRED
            clock.advance(6_000)
            groups.run_timers()
            assert (await member.join_once()).error_code is ErrorCode.UNKNOWN_MEMBER_ID

    run(scenario())
