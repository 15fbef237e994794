"""Topics end to end, on both transports: each serializer's values, keys, headers and
timestamps go through the log and come back to an agent as they were sent."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgspec
import pydantic
import pytest

import streamer
from streamer.events import Event
from tests.streamer.running import Target, run, running

TIMESTAMP_MS = 1_700_000_000_123


@dataclasses.dataclass
class Order:
    id: int
    item: str
    tags: list[str]


class Reading(msgspec.Struct):
    sensor: str
    celsius: float


class Signup(pydantic.BaseModel):
    email: str
    age: int


# topic name → (value type, values sent): every value must come back equal.
CASES: dict[str, tuple[Any, list[Any]]] = {
    "raw": (bytes, [b"\x00\xff binary", b"", None]),
    "text": (str, ["héllo", "", "多字节"]),
    "json": (dict, [{"a": 1, "b": [1, 2, {"c": None}]}, {}, {"unicode": "ü"}]),
    "orders": (Order, [Order(1, "pen", ["blue"]), Order(2, "ink", [])]),
    "readings": (Reading, [Reading("s1", 21.5), Reading("s2", -3.0)]),
    "signups": (Signup, [Signup(email="a@example.com", age=30)]),
}


def test_every_serializer_round_trips_with_keys_headers_and_timestamps(target: Target) -> None:
    async def scenario() -> dict[str, list[Event]]:
        app = streamer.App("serializers", listen=None, commit_interval_s=0.2)
        received: dict[str, list[Event]] = {name: [] for name in CASES}
        for name, (value_type, _) in CASES.items():
            topic = app.topic(name, value_type=value_type, partitions=1)

            async def collect(stream: streamer.Stream, name: str = name) -> None:
                async for event in stream.events():
                    received[name].append(event)

            app.agent(topic, name=f"collect_{name}")(collect)

        @app.task
        async def send_every_case() -> None:
            for name, (_, values) in CASES.items():
                for index, value in enumerate(values):
                    await app.topics[name].send(
                        key=f"{name}-{index}", value=value,
                        headers={"case": name, "index": str(index).encode()},
                        timestamp=TIMESTAMP_MS + index,
                    )

        async with running(app, target) as worker:
            await worker.wait(
                lambda: all(len(received[n]) == len(CASES[n][1]) for n in CASES),
                "every case back",
            )
        return received

    received = run(scenario())
    for name, (value_type, values) in CASES.items():
        events = received[name]
        assert [event.value for event in events] == values, name
        for index, event in enumerate(events):
            assert event.key == f"{name}-{index}"
            assert event.headers == (("case", name.encode()), ("index", str(index).encode()))
            assert event.timestamp == TIMESTAMP_MS + index
            assert event.topic == name and event.partition == 0 and event.offset == index
            if value_type not in (bytes, str, dict) and event.value is not None:
                assert type(event.value) is value_type


def test_key_types_default_timestamps_and_header_forms(target: Target) -> None:
    """Default keys read back as str (UTF-8) or bytes; typed keys decode with their codec;
    a record sent without a timestamp is stamped with the current time; headers may be a
    mapping or pairs, with str, bytes or None values."""

    async def scenario() -> dict[str, list[Event]]:
        app = streamer.App("keys", listen=None, commit_interval_s=0.2)
        auto = app.topic("auto-keys", value_type=str, partitions=1)
        typed = app.topic("json-keys", key_type=dict, value_type=str, partitions=1)
        raw = app.topic("raw-keys", key_type=bytes, value_type=str, partitions=1)
        received: dict[str, list[Event]] = {"auto": [], "typed": [], "raw": []}

        for label, topic in (("auto", auto), ("typed", typed), ("raw", raw)):
            async def collect(stream: streamer.Stream, label: str = label) -> None:
                async for event in stream.events():
                    received[label].append(event)

            app.agent(topic, name=f"collect_{label}")(collect)

        @app.task
        async def send() -> None:
            await auto.send(key="text", value="a", headers=[("h", "1"), ("h", b"2")])
            await auto.send(key=b"\xff\xfe", value="b", headers={"empty": None})
            await auto.send(key=None, value="c")
            await auto.send(key={"user": 7}, value="d")
            await typed.send(key={"user": 7, "region": "eu"}, value="e")
            await raw.send(key=b"\x00\x01", value="f")

        started_ms = int(time.time() * 1000)
        async with running(app, target) as worker:
            await worker.wait(
                lambda: [len(received[k]) for k in ("auto", "typed", "raw")] == [4, 1, 1],
                "every record back",
            )
        finished_ms = int(time.time() * 1000)
        for events in received.values():
            for event in events:
                assert started_ms - 5_000 <= event.timestamp <= finished_ms
        return received

    received = run(scenario())
    auto = received["auto"]
    assert [event.key for event in auto] == ["text", b"\xff\xfe", None, '{"user":7}']
    assert auto[0].headers == (("h", b"1"), ("h", b"2"))
    assert auto[1].headers == (("empty", None),)
    assert received["typed"][0].key == {"user": 7, "region": "eu"}
    assert received["raw"][0].key == b"\x00\x01"


def test_a_value_that_does_not_encode_fails_the_send_naming_the_topic() -> None:
    async def scenario() -> None:
        app = streamer.App("encode", broker="memory://", listen=None)
        orders = app.topic("orders", value_type=Order)
        caught: list[BaseException] = []

        @app.task
        async def send_wrong_type() -> None:
            try:
                await orders.send(value=object())
            except streamer.SerializationError as error:
                caught.append(error)

        async with running(app, "memory://") as worker:
            await worker.wait(lambda: caught, "the send to fail")
        assert "orders" in str(caught[0])

    run(scenario())


def test_declaring_a_topic_twice_with_different_types_is_refused() -> None:
    app = streamer.App("twice", broker="memory://")
    app.topic("t", value_type=str)
    assert app.topic("t") is app.topics["t"]
    with pytest.raises(streamer.StreamerError, match="different types"):
        app.topic("t", value_type=dict)
