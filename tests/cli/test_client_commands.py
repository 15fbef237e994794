"""`streamer topics|produce|consume` as a user runs them, against a real `streamer broker`."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.broker_process import BrokerProcess

RUN_TIMEOUT_S = 60


def _streamer(
    *args: str, input: bytes | str | None = None, timeout_s: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    stdin = input.encode() if isinstance(input, str) else input
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", *args], input=stdin,
        capture_output=True, timeout=timeout_s,
    )
    decoded = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
    assert "Traceback" not in decoded.stderr, decoded.stderr
    return decoded


def _ok(*args: str, input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
    result = _streamer(*args, input=input)
    assert result.returncode == 0, result.stderr
    return result


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_topics_create_list_describe_alter_delete(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    created = _ok("topics", "create", "orders", "--partitions", "3",
                  "--config", "retention.ms=86400000", "--config", "segment.ms=3600000", *b)
    assert "orders" in created.stdout
    _ok("topics", "create", "audit", *b)

    listed = _ok("topics", "list", "--json", *b)
    topics = {t["topic"]: t for t in json.loads(listed.stdout)}
    assert topics["orders"] == {"topic": "orders", "partitions": 3, "internal": False}
    assert topics["audit"]["partitions"] == 1
    plain = _ok("topics", "list", *b).stdout.splitlines()
    assert ["orders", "3"] in [line.split() for line in plain]

    _ok("produce", "orders", "--partition", "2", *b, input="a\nb\n")
    described = json.loads(_ok("topics", "describe", "orders", "--json", *b).stdout)
    assert described["topic"] == "orders" and not described["internal"]
    assert [(p["partition"], p["log_start_offset"], p["log_end_offset"])
            for p in described["partitions"]] == [(0, 0, 0), (1, 0, 0), (2, 0, 2)]
    assert described["configs"]["retention.ms"] == {
        "value": "86400000", "source": "topic", "read_only": False, "sensitive": False,
    }
    assert described["configs"]["cleanup.policy"]["source"] == "default"
    text = _ok("topics", "describe", "orders", *b).stdout
    assert "Partitions: 3" in text and "LOG-END" in text and "retention.ms" in text

    # alter sets one config and keeps the other overrides; --delete-config drops one
    _ok("topics", "alter", "orders", "--config", "cleanup.policy=compact",
        "--delete-config", "segment.ms", "--partitions", "4", *b)
    altered = json.loads(_ok("topics", "describe", "orders", "--json", *b).stdout)
    overrides = {k: v["value"] for k, v in altered["configs"].items() if v["source"] == "topic"}
    assert overrides == {"retention.ms": "86400000", "cleanup.policy": "compact"}
    assert len(altered["partitions"]) == 4

    deleted = _ok("topics", "delete", "orders", "audit", *b)
    assert "orders" in deleted.stdout and "audit" in deleted.stdout
    remaining = {t["topic"] for t in json.loads(_ok("topics", "list", "--json", *b).stdout)}
    assert not {"orders", "audit"} & remaining


def test_topics_errors_are_one_clear_line(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "kept", *b)

    again = _streamer("topics", "create", "kept", *b)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert _streamer("topics", "create", "kept", "--if-not-exists", *b).returncode == 0

    invalid = _streamer("topics", "create", "bad", "--config", "retention.ms=soon", *b)
    assert invalid.returncode == 1
    assert "INVALID_CONFIG" in invalid.stderr and "retention.ms" in invalid.stderr
    assert _streamer("topics", "create", "bad", "--config", "retention.ms", *b).returncode == 2

    for command in (("describe", "ghost"), ("alter", "ghost", "--config", "retention.ms=1")):
        unknown = _streamer("topics", *command, *b)
        assert unknown.returncode == 1 and "unknown topic 'ghost'" in unknown.stderr
    # deleting a mix of known and unknown topics deletes nothing
    mixed = _streamer("topics", "delete", "kept", "ghost", *b)
    assert mixed.returncode == 1 and "'ghost'" in mixed.stderr
    assert _streamer("topics", "delete", "ghost", "--if-exists", *b).returncode == 0
    remaining = {t["topic"] for t in json.loads(_ok("topics", "list", "--json", *b).stdout)}
    assert "kept" in remaining and "ghost" not in remaining  # describe created nothing

    shrink = _streamer("topics", "alter", "kept", "--partitions", "1", *b)
    assert shrink.returncode == 0  # already 1: nothing to do
    bad_alter = _streamer("topics", "alter", "kept", "--config", "retention.ms=x", *b)
    assert bad_alter.returncode == 1 and "INVALID_CONFIG" in bad_alter.stderr


def test_produce_then_consume_every_field_as_json(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "events", *b)
    before_ms = int(time.time() * 1000) - 1000
    produced = _ok(
        "produce", "events", "--key-separator", ":", "--header", "source=cli",
        "--header", "trace=a=b", *b, input="user-1:signed up\nuser-2:paid: 5 EUR\n:no key\nk:\n",
    )
    after_ms = int(time.time() * 1000) + 1000
    assert "produced 4 messages" in produced.stderr
    assert "partition 0 offsets 0-3" in produced.stderr

    consumed = _ok("consume", "events", "--from-beginning", "--count", "4", "--json", *b)
    records = _json_lines(consumed.stdout)
    assert [(r["key"], r["value"]) for r in records] == [
        ("user-1", "signed up"), ("user-2", "paid: 5 EUR"), ("", "no key"), ("k", ""),
    ]
    for offset, record in enumerate(records):
        assert record["topic"] == "events" and record["partition"] == 0
        assert record["offset"] == offset
        assert before_ms <= record["timestamp"] <= after_ms
        assert record["timestamp_type"] == "CreateTime"
        assert record["headers"] == [
            {"key": "source", "value": "cli"}, {"key": "trace", "value": "a=b"},
        ]


def test_binary_values_are_base64_in_json_and_raw_in_text(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "blobs", *b)
    payload = b"\xff\xfe\x00binary"
    _ok("produce", "blobs", *b, input=payload + b"\nplain\n")

    records = _json_lines(_ok("consume", "blobs", "--from-beginning", "--count", "2",
                              "--json", *b).stdout)
    assert records[0]["value"] == {"base64": base64.b64encode(payload).decode()}
    assert records[0]["key"] is None
    assert records[1]["value"] == "plain"

    raw = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", "consume", "blobs", "--from-beginning",
         "--count", "2", *b], capture_output=True, timeout=RUN_TIMEOUT_S,
    )
    assert raw.returncode == 0 and raw.stdout == payload + b"\nplain\n"


def test_format_template(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "fmt", *b)
    _ok("produce", "fmt", "-K", r"\t", "-H", "h1=x", "-H", "h2=y", *b, input="k1\tv1\nk2\tv2\n")
    out = _ok("consume", "fmt", "--from-beginning", "--count", "2", "--format",
              r"{topic}/{partition}/{offset}\t{key}={value} [{headers}] {timestamp}", *b).stdout
    lines = [line.split("\t") for line in out.splitlines()]
    assert [first for first, _ in lines] == ["fmt/0/0", "fmt/0/1"]
    assert [rest.rsplit(" ", 1)[0] for _, rest in lines] == [
        "k1=v1 [h1=x,h2=y]", "k2=v2 [h1=x,h2=y]",
    ]
    assert all(rest.rsplit(" ", 1)[1].isdigit() for _, rest in lines)

    unknown_field = _streamer("consume", "fmt", "--format", "{nope}", *b)
    assert unknown_field.returncode == 2 and "{nope}" in unknown_field.stderr
    both = _streamer("consume", "fmt", "--format", "{value}", "--json", *b)
    assert both.returncode == 2


def test_partition_and_offset(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "parts", "--partitions", "2", *b)
    first = _ok("produce", "parts", "--partition", "0", *b, input="a0\na1\na2\n")
    assert "partition 0 offsets 0-2" in first.stderr
    _ok("produce", "parts", "--partition", "1", "--acks", "1", *b, input="b0\nb1\n")

    def values(*args: str) -> list[str]:
        return _ok("consume", "parts", *args, *b).stdout.splitlines()

    assert values("--partition", "1", "--offset", "beginning", "--count", "2") == ["b0", "b1"]
    assert values("--partition", "0", "--offset", "1", "--count", "2") == ["a1", "a2"]
    assert values("--partition", "0", "--offset=-1", "--count", "1") == ["a2"]
    assert sorted(values("--from-beginning", "--count", "5")) == ["a0", "a1", "a2", "b0", "b1"]
    assert values("--timeout", "1") == []  # the default starts at the end: new messages only
    past_end = _ok("consume", "parts", "--partition", "1", "--offset", "9", "--timeout", "0.5",
                   *b)
    assert past_end.stdout == "" and "starting at 2" in past_end.stderr

    no_partition = _streamer("consume", "parts", "--partition", "5", *b)
    assert no_partition.returncode == 1 and "no partition 5" in no_partition.stderr
    produce_to_none = _streamer("produce", "parts", "--partition", "5", *b, input="x\n")
    assert produce_to_none.returncode == 1 and "no partition 5" in produce_to_none.stderr
    assert _streamer("consume", "parts", "--offset", "soon", *b).returncode == 2

    unknown = _streamer("consume", "ghost", "--timeout", "1", *b)
    assert unknown.returncode == 1 and "unknown topic 'ghost'" in unknown.stderr


def test_count_unmet_before_timeout_exits_1(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "sparse", *b)
    _ok("produce", "sparse", *b, input="only\n")
    result = _streamer("consume", "sparse", "--from-beginning", "--count", "3",
                       "--timeout", "1", *b)
    assert result.returncode == 1
    assert result.stdout == "only\n" and "1 of 3" in result.stderr


def test_produce_stops_at_a_line_without_the_key_separator(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "keyed", *b)
    result = _streamer("produce", "keyed", "-K", ":", *b, input="a:1\nno separator\nb:2\n")
    assert result.returncode == 1
    assert "produced 1 message" in result.stderr and "line 2" in result.stderr
    assert _ok("consume", "keyed", "--from-beginning", "--timeout", "1", *b).stdout == "1\n"
    bad_header = _streamer("produce", "keyed", "--header", "novalue", *b, input="x\n")
    assert bad_header.returncode == 2


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def test_group_continues_where_the_last_consumer_stopped(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "jobs", "--partitions", "2", *b)
    _ok("produce", "jobs", "--partition", "0", *b, input="".join(f"j{i}\n" for i in range(4)))
    _ok("produce", "jobs", "--partition", "1", *b, input="".join(f"j{i}\n" for i in range(4, 6)))

    group = ("--group", "workers")
    seen = _ok("consume", "jobs", *group, "--from-beginning", "--count", "3", *b)
    first = asyncio.run(_committed(broker.bootstrap, "workers"))
    # what it printed, and where it started in a partition it printed nothing from
    assert sum(first.values()) == 3 and set(first) == {("jobs", 0), ("jobs", 1)}
    rest = _ok("consume", "jobs", *group, "--count", "3", "--timeout", "10", *b)
    printed = seen.stdout.splitlines() + rest.stdout.splitlines()
    assert sorted(printed) == [f"j{i}" for i in range(6)]
    assert asyncio.run(_committed(broker.bootstrap, "workers")) == {
        ("jobs", 0): 4, ("jobs", 1): 2,
    }
    # --partition with --group reads that partition from the group's committed offset
    _ok("produce", "jobs", "--partition", "1", *b, input="j6\n")
    one = _ok("consume", "jobs", *group, "--partition", "1", "--count", "1", *b)
    assert one.stdout == "j6\n"
    assert asyncio.run(_committed(broker.bootstrap, "workers"))[("jobs", 1)] == 3


def test_sigterm_commits_and_exits_cleanly(broker: BrokerProcess) -> None:
    b = ("--broker", broker.bootstrap)
    _ok("topics", "create", "live", *b)
    _ok("produce", "live", *b, input="first\nsecond\n")
    consumer = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli.main", "consume", "live", "--group", "tail",
         "--from-beginning", *b],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(30, consumer.kill)  # a hung consumer fails, not hangs, the test
    watchdog.start()
    try:
        assert consumer.stdout is not None and consumer.stderr is not None
        assert [consumer.stdout.readline(), consumer.stdout.readline()] == [
            "first\n", "second\n",
        ]
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(15) == 0
        assert consumer.stderr.read() == ""
    finally:
        watchdog.cancel()
        consumer.kill()
        consumer.wait()
    # what it printed was committed: the group has nothing left
    _ok("produce", "live", *b, input="third\n")
    assert _ok("consume", "live", "--group", "tail", "--timeout", "1.5", *b).stdout == "third\n"


def test_unreachable_broker_is_a_quick_clear_error() -> None:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    commands: list[tuple[tuple[str, ...], str | None]] = [
        (("topics", "list"), None),
        (("topics", "describe", "t"), None),
        (("produce", "t"), "x\n"),
        (("consume", "t", "--timeout", "1"), None),
    ]
    for args, stdin in commands:
        started = time.monotonic()
        result = _streamer(*args, "--broker", f"kafka://{address}", "--request-timeout", "2",
                           input=stdin, timeout_s=30)
        assert result.returncode == 1, args
        assert f"cannot reach a broker at {address}" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert time.monotonic() - started < 15


@pytest.mark.parametrize("address", ["http://x:1", "host:port", "h:0", ","])
def test_bad_broker_address_is_a_usage_error(address: str) -> None:
    result = _streamer("topics", "list", "--broker", address)
    assert result.returncode == 2 and "--broker" in result.stderr
