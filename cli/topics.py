"""``streamer topics``: list, create, describe, alter and delete topics over the Kafka protocol.

The commands speak to any Kafka-compatible broker (``streamer broker`` or Kafka itself) through
aiokafka's admin client, so what they show is what a Kafka client sees. ``describe`` adds each
partition's log start and end offsets (ListOffsets earliest and latest) through a consumer
that joins no group.

This module also holds what the client commands (``topics``, ``produce``, ``consume``) share:
``--broker`` parsing, connecting with a bound on the wait, and turning client failures into one
line on stderr and exit code 1 (:class:`ClientCommandError`), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import click
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.structs import TopicPartition

__all__ = [
    "DEFAULT_BROKER",
    "REQUEST_TIMEOUT_S_DEFAULT",
    "ClientCommandError",
    "ConfigEntry",
    "PartitionDescription",
    "TopicDescription",
    "TopicSummary",
    "connected",
    "describe_topic",
    "kafka_error_text",
    "list_topics",
    "parse_bootstrap",
    "parse_config_pairs",
    "run_client",
    "run_topics_alter",
    "run_topics_create",
    "run_topics_delete",
    "run_topics_describe",
    "run_topics_list",
    "unescape",
]

DEFAULT_BROKER = "127.0.0.1:9092"
REQUEST_TIMEOUT_S_DEFAULT = 10.0
KAFKA_URL_PREFIX = "kafka://"
KAFKA_PORT = 9092

# DescribeConfigs v1+ names where a value comes from; v0 only says "default or not".
CONFIG_SOURCES = {
    0: "unknown", 1: "topic", 2: "broker", 3: "cluster", 4: "broker-static", 5: "default",
    6: "broker-logger",
}
CONFIG_SOURCE_TOPIC = 1
ERROR_UNKNOWN_TOPIC = 3  # the rest (e.g. LEADER_NOT_AVAILABLE) are of a topic that exists
ERROR_TOPIC_ALREADY_EXISTS = 36

T = TypeVar("T")


class ClientCommandError(click.ClickException):
    """Why a client command failed, in one line; click prints it on stderr and exits 1."""


# -- shared by topics, produce and consume -------------------------------------------------


def parse_bootstrap(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` or ``kafka://HOST:PORT`` into aiokafka's address list.

    >>> parse_bootstrap("kafka://a:1, b")
    ['a:1', 'b:9092']
    """
    addresses = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        if part.lower().startswith(KAFKA_URL_PREFIX):
            part = part[len(KAFKA_URL_PREFIX):].rstrip("/")
        elif "://" in part:
            raise ValueError(f"{part!r}: expected HOST:PORT or kafka://HOST:PORT")
        addresses.append(_host_port(part))
    if not addresses:
        raise ValueError(f"{text!r}: expected HOST:PORT[,HOST:PORT...]")
    return addresses


def _host_port(text: str) -> str:
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    port_text = port_text or str(KAFKA_PORT)
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT with a port from 1 to 65535")
    return f"[{host}]:{port_text}" if ":" in host else f"{host}:{port_text}"


def parse_config_pairs(pairs: Iterable[str], what: str = "--config") -> dict[str, str]:
    """``["k=v", ...]`` into a dict; a pair without ``=`` or with an empty name is an error."""
    configs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint=what)
        configs[name.strip()] = value
    return configs


_ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0"}


def unescape(text: str) -> str:
    r"""``\t``, ``\n``, ``\r``, ``\0`` and ``\\`` as the characters they name (kcat reads
    ``-K`` and ``-f`` this way), since a tab is awkward to type on a command line.

    >>> unescape(r"{key}\t{value}")
    '{key}\t{value}'
    """
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), text)


_CONNECT_FAILED = re.compile(r'Unable connect to "(?P<address>[^"]+)": (?P<reason>.*)')
_ERRNO = re.compile(r"\[Errno (?P<errno>-?\d+)\] (?P<text>.*)")


class _ClientWarnings(logging.Handler):
    """Keeps aiokafka's warnings so a failure can say *why* (refused, reset, no route) for
    each address, without letting the client's own log lines clutter stderr."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: str | None = None
        self.connect_failures: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()
        failed = _CONNECT_FAILED.fullmatch(self.last)
        if failed:
            reason = failed["reason"].removeprefix("KafkaConnectionError: ")
            errno = _ERRNO.fullmatch(reason)
            if errno:  # "[Errno 111] Connect call failed (...)": say what 111 means
                number = int(errno["errno"])
                reason = (os.strerror(number) if number > 0 else errno["text"]).lower()
            self.connect_failures[failed["address"]] = reason


_client_warnings = _ClientWarnings()


def _capture_client_log() -> None:
    client_logger = logging.getLogger("aiokafka")
    client_logger.handlers = [_client_warnings]
    client_logger.setLevel(logging.WARNING)
    client_logger.propagate = False


def _unreachable(bootstrap: Sequence[str]) -> str:
    failures = _client_warnings.connect_failures
    addresses = ", ".join(
        f"{address} ({failures[address]})" if address in failures else address
        for address in bootstrap
    )
    if not failures and _client_warnings.last:
        addresses += f" ({_client_warnings.last})"
    return f"cannot reach a broker at {addresses}; is it running? Pass --broker HOST:PORT"


def kafka_error_text(code: int, message: str | None = None) -> str:
    """A Kafka error code as ``NAME: what the broker said`` (or Kafka's description)."""
    error = for_code(code)
    return f"{error.message}: {message or error.description}"


class _Startable(Protocol):
    async def start(self) -> Any: ...


ClientT = TypeVar("ClientT", bound=_Startable)


async def _close(client: Any) -> None:
    # The admin client closes, producers and consumers stop.
    closer = client.close if isinstance(client, AIOKafkaAdminClient) else client.stop
    with contextlib.suppress(Exception):
        await closer()


@contextlib.asynccontextmanager
async def connected(
    client: ClientT, bootstrap: Sequence[str], timeout_s: float
) -> AsyncIterator[ClientT]:
    """Start ``client`` (bootstrap within ``timeout_s``), yield it, always close it."""
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except TimeoutError:
        await _close(client)
        raise ClientCommandError(
            f"no answer from a broker at {','.join(bootstrap)} within {timeout_s:g} s"
        ) from None
    except KafkaConnectionError:
        await _close(client)
        raise ClientCommandError(_unreachable(bootstrap)) from None
    except BaseException:
        await _close(client)
        raise
    try:
        yield client
    finally:
        await _close(client)


def run_client(coroutine: Coroutine[Any, Any, T], bootstrap: Sequence[str]) -> T:
    """Run a client command's coroutine; client failures become :class:`ClientCommandError`."""
    _capture_client_log()
    try:
        return asyncio.run(coroutine)
    except KafkaConnectionError:
        raise ClientCommandError(_unreachable(bootstrap)) from None
    except KafkaError as error:
        raise ClientCommandError(str(error)) from None
    except TimeoutError:
        raise ClientCommandError(
            f"a broker at {','.join(bootstrap)} stopped answering (timed out)"
        ) from None


def _admin(bootstrap: Sequence[str], timeout_s: float) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=list(bootstrap), client_id="streamer-topics",
        request_timeout_ms=int(timeout_s * 1000),
    )


def _echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def _columns(rows: Sequence[Sequence[object]], indent: str = "") -> str:
    texts = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in texts) for i in range(len(texts[0]))]
    return "\n".join(
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        .rstrip()
        for row in texts
    )


# -- what the commands find out ------------------------------------------------------------


@dataclass(frozen=True)
class TopicSummary:
    topic: str
    partitions: int
    internal: bool


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    log_start_offset: int
    log_end_offset: int


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    value: str | None  # None: the broker hides a sensitive value
    source: str  # a CONFIG_SOURCES name: "topic" is an override of this topic
    read_only: bool
    sensitive: bool


@dataclass(frozen=True)
class TopicDescription:
    topic: str
    internal: bool
    partitions: list[PartitionDescription]
    configs: list[ConfigEntry]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "internal": self.internal,
            "partitions": [asdict(p) for p in self.partitions],
            "configs": {
                c.name: {k: v for k, v in asdict(c).items() if k != "name"}
                for c in self.configs
            },
        }


async def _all_topic_metadata(admin: AIOKafkaAdminClient) -> dict[str, dict[str, Any]]:
    # Metadata for *all* topics: naming a topic instead would auto-create it on brokers
    # that do that, and describe/delete must not create what they look for.
    topics: list[dict[str, Any]] = await admin.describe_topics(None)
    return {t["topic"]: t for t in topics if t["error_code"] != ERROR_UNKNOWN_TOPIC}


async def list_topics(bootstrap: Sequence[str], timeout_s: float) -> list[TopicSummary]:
    async with connected(_admin(bootstrap, timeout_s), bootstrap, timeout_s) as admin:
        metadata = await _all_topic_metadata(admin)
    return [
        TopicSummary(name, len(m["partitions"]), bool(m["is_internal"]))
        for name, m in sorted(metadata.items())
    ]


def _unknown_topic(topic: str) -> ClientCommandError:
    return ClientCommandError(f"unknown topic {topic!r} (see: streamer topics list)")


def _config_entries(resource: dict[str, Any]) -> list[ConfigEntry]:
    entries = []
    for entry in resource["config_entries"]:
        if "config_source" in entry:
            source = CONFIG_SOURCES.get(entry["config_source"], "unknown")
        else:
            source = "default" if entry["is_default"] else "topic"
        entries.append(ConfigEntry(
            entry["config_names"], entry["config_value"], source,
            bool(entry["read_only"]), bool(entry["is_sensitive"]),
        ))
    return sorted(entries, key=lambda e: e.name)


async def _topic_configs(admin: AIOKafkaAdminClient, topic: str) -> list[ConfigEntry]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["resource_name"] != topic:
                continue
            if resource["error_code"]:
                raise ClientCommandError(
                    f"cannot describe the configs of {topic!r}: "
                    + kafka_error_text(resource["error_code"], resource["error_message"])
                )
            return _config_entries(resource)
    return []


async def _log_offsets(
    bootstrap: Sequence[str], timeout_s: float, topic: str, partitions: Iterable[int]
) -> tuple[dict[int, int], dict[int, int]]:
    """(log start, log end) offset of each partition: ListOffsets earliest and latest."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(bootstrap), client_id="streamer-topics",
        request_timeout_ms=int(timeout_s * 1000), enable_auto_commit=False,
    )
    tps = [TopicPartition(topic, p) for p in partitions]
    async with connected(consumer, bootstrap, timeout_s):
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    return (
        {tp.partition: int(offset) for tp, offset in starts.items()},
        {tp.partition: int(offset) for tp, offset in ends.items()},
    )


async def describe_topic(
    bootstrap: Sequence[str], timeout_s: float, topic: str
) -> TopicDescription:
    async with connected(_admin(bootstrap, timeout_s), bootstrap, timeout_s) as admin:
        metadata = (await _all_topic_metadata(admin)).get(topic)
        if metadata is None:
            raise _unknown_topic(topic)
        configs = await _topic_configs(admin, topic)
    partitions = sorted(metadata["partitions"], key=lambda p: p["partition"])
    starts, ends = await _log_offsets(
        bootstrap, timeout_s, topic, [p["partition"] for p in partitions]
    )
    return TopicDescription(
        topic, bool(metadata["is_internal"]),
        [
            PartitionDescription(
                p["partition"], p["leader"], list(p["replicas"]), list(p["isr"]),
                starts[p["partition"]], ends[p["partition"]],
            )
            for p in partitions
        ],
        configs,
    )


async def _create_topic(
    bootstrap: Sequence[str], timeout_s: float, topic: NewTopic, if_not_exists: bool
) -> bool:
    """True if created, False if it existed and ``if_not_exists``."""
    async with connected(_admin(bootstrap, timeout_s), bootstrap, timeout_s) as admin:
        response = await admin.create_topics([topic])
    for result in response.to_object()["topic_errors"]:
        code = result["error_code"]
        if code == ERROR_TOPIC_ALREADY_EXISTS and if_not_exists:
            return False
        if code:
            raise ClientCommandError(
                f"cannot create topic {topic.name!r}: "
                + kafka_error_text(code, result.get("error_message"))
            )
    return True


async def _delete_topics(
    bootstrap: Sequence[str], timeout_s: float, topics: Sequence[str], if_exists: bool
) -> list[str]:
    """Delete ``topics``; returns the ones deleted. Unknown names fail before any deletion
    unless ``if_exists``."""
    async with connected(_admin(bootstrap, timeout_s), bootstrap, timeout_s) as admin:
        existing = await _all_topic_metadata(admin)
        unknown = [t for t in topics if t not in existing]
        if unknown and not if_exists:
            raise ClientCommandError(
                f"unknown topic{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(t) for t in unknown)}; nothing was deleted"
            )
        to_delete = [t for t in dict.fromkeys(topics) if t in existing]
        if not to_delete:
            return []
        response = await admin.delete_topics(to_delete)
    failures = [
        f"{r['topic']!r}: {kafka_error_text(r['error_code'], r.get('error_message'))}"
        for r in response.to_object()["topic_error_codes"]
        if r["error_code"]
    ]
    if failures:
        raise ClientCommandError("cannot delete topic " + "; ".join(failures))
    return to_delete


async def _alter_topic(
    bootstrap: Sequence[str], timeout_s: float, topic: str, *,
    set_configs: dict[str, str], delete_configs: Sequence[str], partitions: int | None,
) -> None:
    async with connected(_admin(bootstrap, timeout_s), bootstrap, timeout_s) as admin:
        metadata = (await _all_topic_metadata(admin)).get(topic)
        if metadata is None:
            raise _unknown_topic(topic)
        current = len(metadata["partitions"])
        if partitions is not None and partitions < current:
            raise ClientCommandError(
                f"{topic!r} has {current} partitions; a topic's partitions can only grow"
            )
        if partitions is not None and partitions > current:
            try:
                await admin.create_partitions({topic: NewPartitions(partitions)})
            except KafkaError as error:
                raise ClientCommandError(
                    f"cannot change {topic!r} to {partitions} partitions: {error}"
                ) from None
        if set_configs or delete_configs:
            await _alter_configs(admin, topic, set_configs, delete_configs)


async def _alter_configs(
    admin: AIOKafkaAdminClient, topic: str, set_configs: dict[str, str],
    delete_configs: Sequence[str],
) -> None:
    # AlterConfigs replaces the topic's whole set of overrides, so what is not named here
    # is kept by sending it again (IncrementalAlterConfigs is not in aiokafka's admin).
    current = await _topic_configs(admin, topic)
    overrides = {
        c.name: c.value for c in current
        if c.source == CONFIG_SOURCES[CONFIG_SOURCE_TOPIC] and c.value is not None
    }
    not_set = [name for name in delete_configs if name not in overrides]
    if not_set:
        raise ClientCommandError(
            f"{topic!r} has no override of {', '.join(not_set)} to delete"
        )
    wanted = {k: v for k, v in overrides.items() if k not in delete_configs} | set_configs
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, wanted)]
    )
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                raise ClientCommandError(
                    f"cannot alter the configs of {topic!r}: "
                    + kafka_error_text(resource["error_code"], resource["error_message"])
                )


# -- the commands --------------------------------------------------------------------------


def run_topics_list(bootstrap: Sequence[str], timeout_s: float, as_json: bool) -> None:
    topics = run_client(list_topics(bootstrap, timeout_s), bootstrap)
    if as_json:
        _echo_json([asdict(t) for t in topics])
    elif topics:
        click.echo(_columns([
            (t.topic, t.partitions, "internal" if t.internal else "") for t in topics
        ]))


def run_topics_describe(
    bootstrap: Sequence[str], timeout_s: float, topic: str, as_json: bool
) -> None:
    description = run_client(describe_topic(bootstrap, timeout_s, topic), bootstrap)
    if as_json:
        _echo_json(description.to_json())
        return
    click.echo(
        f"Topic: {description.topic}  Partitions: {len(description.partitions)}"
        + ("  (internal)" if description.internal else "")
    )
    header = ("PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START", "LOG-END")
    click.echo(_columns([header] + [
        (p.partition, p.leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)),
         p.log_start_offset, p.log_end_offset)
        for p in description.partitions
    ], indent="  "))
    if description.configs:
        click.echo("Configs:")
        click.echo(_columns([
            (c.name, "(sensitive)" if c.value is None else c.value, f"({c.source})")
            for c in description.configs
        ], indent="  "))


def run_topics_create(
    bootstrap: Sequence[str], timeout_s: float, topic: str, *, partitions: int,
    replication_factor: int, configs: dict[str, str], if_not_exists: bool,
) -> None:
    new_topic = NewTopic(topic, partitions, replication_factor, topic_configs=configs)
    created = run_client(
        _create_topic(bootstrap, timeout_s, new_topic, if_not_exists), bootstrap
    )
    if created:
        plural = "s" if partitions != 1 else ""
        click.echo(f"created topic {topic!r} ({partitions} partition{plural})")
    else:
        click.echo(f"topic {topic!r} already exists")


def run_topics_delete(
    bootstrap: Sequence[str], timeout_s: float, topics: Sequence[str], if_exists: bool
) -> None:
    deleted = run_client(_delete_topics(bootstrap, timeout_s, topics, if_exists), bootstrap)
    for topic in deleted:
        click.echo(f"deleted topic {topic!r}")


def run_topics_alter(
    bootstrap: Sequence[str], timeout_s: float, topic: str, *,
    set_configs: dict[str, str], delete_configs: Sequence[str], partitions: int | None,
) -> None:
    if not set_configs and not delete_configs and partitions is None:
        raise click.UsageError("nothing to alter: pass --config, --delete-config or --partitions")
    overlap = set(set_configs) & set(delete_configs)
    if overlap:
        raise click.UsageError(f"both set and deleted: {', '.join(sorted(overlap))}")
    run_client(_alter_topic(
        bootstrap, timeout_s, topic, set_configs=set_configs, delete_configs=delete_configs,
        partitions=partitions,
    ), bootstrap)
    click.echo(f"altered topic {topic!r}")
