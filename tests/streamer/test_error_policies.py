"""Error policies with a real worker, on both transports: ``raise`` stops the worker naming
the topic, partition and offset; ``skip`` goes on; ``dead_letter`` sends the event with the
error in its headers; ``retry`` runs the event again a bounded number of times, then falls
back to ``then``. A value that fails to decode goes through the same policies."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import streamer
from streamer.events import Event
from tests.streamer.running import Target, committed_offsets, run, running


def _app(name: str) -> streamer.App:
    return streamer.App(name, listen=None, commit_interval_s=0.2)


def _feed(app: streamer.App, topic: streamer.Topic, values: list[Any]) -> None:
    @app.task
    async def feed() -> None:
        for index, value in enumerate(values):
            await topic.send(key=f"k{index}", value=value, headers={"origin": "test"})


def _collector(app: streamer.App, topic_name: str, into: list[Event]) -> None:
    async def collect(stream: streamer.Stream) -> None:
        async for event in stream.events():
            into.append(event)

    app.agent(app.topic(topic_name), name=f"collect_{topic_name.replace('-', '_')}")(collect)


def test_raise_stops_the_worker_naming_topic_partition_and_offset(target: Target) -> None:
    async def scenario() -> list[int]:
        app = _app("raising")
        numbers = app.topic("numbers", value_type=dict, partitions=1)
        done: list[int] = []

        @app.agent(numbers)
        async def divide(stream: streamer.Stream) -> None:
            async for value in stream.map(lambda v: v["n"]):
                done.append(100 // value)

        _feed(app, numbers, [{"n": n} for n in (5, 4, 0, 2)])
        with pytest.raises(streamer.AgentError) as caught:
            await asyncio.wait_for(app.run(broker=target.url), 30)
        message = str(caught.value)
        assert message.startswith("agent divide failed on numbers[0] offset 2: ")
        assert "ZeroDivisionError" in message
        assert isinstance(caught.value.__cause__, ZeroDivisionError)
        assert done == [20, 25]
        assert [e.where for e in app.recent_errors] == ["numbers[0] offset 2"]
        # The failed event was not committed: a restart reads it again.
        return await committed_offsets(target.url, "raising", "numbers", 1)

    (committed,) = run(scenario())
    assert committed <= 2


def test_skip_logs_and_goes_on_even_inside_operators(target: Target) -> None:
    async def scenario() -> tuple[list[int], list[Any]]:
        app = _app("skipping")
        numbers = app.topic("numbers", value_type=dict, partitions=2)
        done: list[int] = []

        @app.agent(numbers, on_error="skip")
        async def divide(stream: streamer.Stream) -> None:
            async for value in stream.map(lambda v: v["n"]).filter(lambda n: n != 7):
                done.append(100 // value)

        _feed(app, numbers, [{"n": n} for n in (1, 0, 2, 0, 7, 4, 5)])
        async with running(app, target) as worker:
            await worker.wait(lambda: len(done) == 4, "four quotients")
            assert app.agents[0].statistics().errors == 2
        return done, [e.where.split(" offset ")[0] for e in app.recent_errors]

    done, where = run(scenario())
    assert sorted(done) == [20, 25, 50, 100]
    assert all(w.startswith("numbers[") for w in where) and len(where) == 2


def test_dead_letter_sends_the_event_with_the_error_in_its_headers(target: Target) -> None:
    async def scenario() -> list[Event]:
        app = _app("letters")
        orders = app.topic("orders", value_type=dict, partitions=1)
        dead: list[Event] = []
        done: list[int] = []

        @app.agent(orders, on_error="dead_letter")
        async def price(stream: streamer.Stream) -> None:
            async for order in stream:
                done.append(order["total"] // order["count"])

        _collector(app, "letters-price-dead-letter", dead)
        _feed(app, orders, [{"total": 10, "count": 2}, {"total": 3, "count": 0},
                            {"total": 9, "count": 3}])
        async with running(app, target) as worker:
            await worker.wait(lambda: len(dead) == 1 and len(done) == 2, "one dead letter")
        return dead

    (letter,) = run(scenario())
    headers = dict(letter.headers)
    assert letter.key == "k1" and letter.value == b'{"total":3,"count":0}'
    assert headers["origin"] == b"test"
    assert headers["streamer.error"].startswith(b"ZeroDivisionError: ")
    assert b"Traceback" in headers["streamer.error.trace"]
    assert headers["streamer.source"] == b"orders/0/1"
    assert headers["streamer.agent"] == b"price"
    assert int(headers["streamer.failed_at_ms"]) > 0


def test_a_value_that_does_not_decode_goes_through_the_policy(target: Target) -> None:
    """Bad JSON on a dict topic: ``dead_letter`` keeps the raw bytes; the events after it are
    processed; nothing kills the worker."""

    async def scenario() -> tuple[list[Any], list[Event]]:
        app = _app("decoding")
        orders = app.topic("orders", value_type=dict, partitions=1)
        dead: list[Event] = []
        done: list[Any] = []

        @app.agent(orders, on_error="dead_letter", dead_letter_topic="bad-orders")
        async def read(stream: streamer.Stream) -> None:
            async for order in stream:
                done.append(order)

        _collector(app, "bad-orders", dead)

        @app.task
        async def feed() -> None:
            await orders.send(value={"id": 1})
            await app.send_raw("orders", b"bad", b"{not json", (), None, None)
            await app.send_raw("orders", None, b"\xff\xfe", (), None, None)
            await orders.send(value={"id": 2})

        async with running(app, target) as worker:
            await worker.wait(lambda: len(dead) == 2 and len(done) == 2, "two dead letters")
        return done, dead

    done, dead = run(scenario())
    assert done == [{"id": 1}, {"id": 2}]
    assert [(e.key, e.value) for e in dead] == [("bad", b"{not json"), (None, b"\xff\xfe")]
    for letter in dead:
        error = dict(letter.headers)["streamer.error"]
        assert error.startswith(b"SerializationError: topic 'orders' offset "), error


def test_a_value_that_does_not_decode_stops_a_raise_agent_with_a_clear_error(
    target: Target,
) -> None:
    async def scenario() -> None:
        app = _app("undecodable")
        orders = app.topic("orders", value_type=dict, partitions=1)

        @app.agent(orders)
        async def read(stream: streamer.Stream) -> None:
            async for _ in stream:
                pass

        @app.task
        async def feed() -> None:
            await app.send_raw("orders", None, b"[1, 2", (), None, None)

        with pytest.raises(streamer.AgentError,
                           match=r"^agent read failed on orders\[0\] offset 0: "
                                 r"SerializationError: topic 'orders' offset 0: not JSON"):
            await asyncio.wait_for(app.run(broker=target.url), 30)

    run(scenario())


def test_retry_runs_the_same_event_again_until_it_succeeds(target: Target) -> None:
    async def scenario() -> tuple[list[tuple[int, int]], list[int]]:
        app = _app("retrying")
        jobs = app.topic("jobs", value_type=dict, partitions=1)
        attempts: list[tuple[int, int]] = []  # (job, offset) per attempt
        done: list[int] = []

        @app.agent(jobs, on_error="retry", retries=3, retry_backoff_s=0.01)
        async def flaky(stream: streamer.Stream) -> None:
            async for event in stream.map(lambda v: v["job"]).events():
                attempts.append((event.value, event.offset))
                if event.value == 1 and len([a for a in attempts if a[0] == 1]) < 3:
                    raise ConnectionError("try again")
                done.append(event.value)

        _feed(app, jobs, [{"job": j} for j in range(3)])
        async with running(app, target) as worker:
            await worker.wait(lambda: len(done) == 3, "three jobs")
        return attempts, done

    attempts, done = run(scenario())
    assert done == [0, 1, 2]
    assert attempts == [(0, 0), (1, 1), (1, 1), (1, 1), (2, 2)]


@pytest.mark.parametrize("then", ["skip", "dead_letter"])
def test_retry_is_bounded_then_falls_back(target: Target, then: str) -> None:
    async def scenario() -> tuple[int, list[int], list[Event]]:
        app = _app("bounded")
        jobs = app.topic("jobs", value_type=dict, partitions=1)
        attempts: list[int] = []
        done: list[int] = []
        dead: list[Event] = []

        @app.agent(jobs, on_error="retry", retries=2, retry_backoff_s=0.01,
                   then=then)  # type: ignore[arg-type]
        async def hopeless(stream: streamer.Stream) -> None:
            async for job in stream:
                attempts.append(job["job"])
                if job["job"] == 1:
                    raise RuntimeError("never works")
                done.append(job["job"])

        _collector(app, "bounded-hopeless-dead-letter", dead)
        _feed(app, jobs, [{"job": j} for j in range(3)])
        async with running(app, target) as worker:
            await worker.wait(lambda: len(done) == 2, "the other two jobs")
            if then == "dead_letter":
                await worker.wait(lambda: len(dead) == 1, "the dead letter")
        return attempts.count(1), done, dead

    tries, done, dead = run(scenario())
    assert tries == 3  # the first run and two retries
    assert done == [0, 2]
    assert len(dead) == (1 if then == "dead_letter" else 0)


def test_retry_then_raise_stops_the_worker(target: Target) -> None:
    async def scenario() -> int:
        app = _app("exhausted")
        jobs = app.topic("jobs", value_type=dict, partitions=1)
        attempts: list[int] = []

        @app.agent(jobs, on_error="retry", retries=2, retry_backoff_s=0.01)
        async def hopeless(stream: streamer.Stream) -> None:
            async for job in stream:
                attempts.append(job["job"])
                raise RuntimeError("never works")

        _feed(app, jobs, [{"job": 7}])
        with pytest.raises(streamer.AgentError, match=r"jobs\[0\] offset 0: RuntimeError"):
            await asyncio.wait_for(app.run(broker=target.url), 30)
        return len(attempts)

    assert run(scenario()) == 3


def test_policies_act_on_the_regrouped_event_in_a_group_by_stream(target: Target) -> None:
    """A failure while handling an event of the repartition topic is that event's: retry
    runs it again, skip moves past it, and the agent keeps its regrouped stream."""

    async def scenario() -> tuple[list[int], list[str]]:
        app = _app("regrouped")
        clicks = app.topic("clicks", value_type=dict, partitions=2)
        attempts: list[int] = []
        done: list[int] = []

        @app.agent(clicks, on_error="retry", retries=1, retry_backoff_s=0.01, then="skip")
        async def per_user(stream: streamer.Stream) -> None:
            async for click in stream.group_by("user", partitions=2):
                attempts.append(click["i"])
                if click["i"] in (3, 5):
                    raise ValueError(f"click {click['i']}")
                done.append(click["i"])

        _feed(app, clicks, [{"user": "u1", "i": i} for i in range(8)])
        async with running(app, target) as worker:
            await worker.wait(lambda: len(done) == 6, "six clicks")
        return attempts, [e.where for e in app.recent_errors]

    attempts, where = run(scenario())
    assert sorted(set(attempts)) == list(range(8))
    assert attempts.count(3) == 2 and attempts.count(5) == 2
    assert all(w.startswith("regrouped-user-repartition[") for w in where), where


# -- known bugs: a restart after an error loses events taken ahead by merge and branch --------


async def _processed_after_one_skip(build: Any, expected: set[int]) -> set[int]:
    """Run the agent ``build(app, source, other, done)`` makes, which fails once on value 10
    (policy skip), over values 0..99 of ``source`` and 1000..1099 of ``other``; return what
    it processed once nothing more arrives."""
    app = _app("known-bugs")
    source = app.topic("source", value_type=dict, partitions=1)
    other = app.topic("other", value_type=dict, partitions=1)
    done: list[int] = []
    build(app, source, other, done)

    @app.task
    async def feed() -> None:
        for i in range(100):
            await source.send(value={"i": i})
            await other.send(value={"i": 1000 + i})

    async with running(app, "memory://") as worker:
        with contextlib.suppress(AssertionError):
            await worker.wait(lambda: set(done) >= expected, "every value", timeout_s=1.5)
    return set(done)


@pytest.mark.xfail(strict=True, reason="merge: the event another source fetched ahead is "
                   "dropped when the agent restarts after an error (skip/dead_letter/retry)")
def test_merge_loses_nothing_when_the_agent_restarts_after_an_error() -> None:
    def build(app: streamer.App, source: streamer.Topic, other: streamer.Topic,
              done: list[int]) -> None:
        @app.agent(source, on_error="skip")
        async def merged(stream: streamer.Stream) -> None:
            async for value in stream.merge(other.stream()):
                if value["i"] == 10:
                    raise ValueError("once")
                done.append(value["i"])

    expected = (set(range(100)) | set(range(1000, 1100))) - {10}
    assert run(_processed_after_one_skip(build, expected)) == expected


@pytest.mark.xfail(strict=True, reason="branch: the pump of the failed run goes on taking "
                   "events into queues nobody reads, and values queued in a branch are "
                   "acknowledged before they are processed")
def test_branch_loses_nothing_when_the_agent_restarts_after_an_error() -> None:
    def build(app: streamer.App, source: streamer.Topic, other: streamer.Topic,
              done: list[int]) -> None:
        @app.agent(source, on_error="skip")
        async def split(stream: streamer.Stream) -> None:
            evens, odds = stream.branch(lambda v: v["i"] % 2 == 0)

            async def drain(branch: streamer.Stream) -> None:
                async for value in branch:
                    if value["i"] == 10:
                        raise ValueError("once")
                    done.append(value["i"])

            await asyncio.gather(drain(evens), drain(odds))

    expected = set(range(100)) - {10}
    assert run(_processed_after_one_skip(build, expected)) == expected
