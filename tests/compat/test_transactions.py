"""Transactions against a real ``streamer broker`` subprocess, with unmodified clients.

aiokafka's and confluent-kafka's (librdkafka's) transactional producers commit, abort,
commit consumer offsets in a transaction, get fenced by a second producer with the same
transactional id, survive a broker restart in the middle of a transaction, and (librdkafka)
recover from an abortable error by bumping their epoch (KIP-360). read_committed consumers
of aiokafka, confluent-kafka and kafka-python read a mix of committed, aborted, open and
non-transactional writes from interleaved producers over several partitions: they get
every committed record in order and nothing else; read_uncommitted gets everything.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPythonPartition
from streamer.log import Log
from streamer.log.transactions import TransactionState
from streamer.log.transactions.store import TransactionLog

from tests.broker_process import BrokerProcess

from .workload import BROKER_STOPS, stop_broker, unique_name

T = TypeVar("T")

TIMEOUT_S = 20.0
QUIET_S = 0.3  # after the expected records, how long a reader waits for unexpected ones
PARTITIONS = 3
Values = dict[int, list[bytes]]  # partition → values in offset order


def run(scenario: Awaitable[T]) -> T:
    async def bounded() -> T:  # a hang fails the test instead of the suite
        return await asyncio.wait_for(scenario, timeout=3 * TIMEOUT_S)

    return asyncio.run(bounded())


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions)])[topic].result(TIMEOUT_S)


# -- readers, one per client ------------------------------------------------------------------


def _count(values: Values) -> int:
    return sum(len(found) for found in values.values())


async def aiokafka_read(bootstrap: str, topic: str, isolation: str, expected: int) -> Values:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: Values = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + TIMEOUT_S
        while _count(found) < expected and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                found[tp.partition] += [record.value for record in records]
        for tp, records in (await consumer.getmany(timeout_ms=int(QUIET_S * 1000))).items():
            found[tp.partition] += [record.value for record in records]
        return found
    finally:
        await consumer.stop()


def confluent_read(bootstrap: str, topic: str, isolation: str, expected: int) -> Values:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": unique_name("reader"),
        "isolation.level": isolation, "enable.auto.commit": False,
    })  # fmt: skip
    try:
        consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        found: Values = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + TIMEOUT_S
        quiet_until = None
        while time.monotonic() < (quiet_until or deadline):
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                found[message.partition()].append(message.value())
            if quiet_until is None and _count(found) >= expected:
                quiet_until = time.monotonic() + QUIET_S
        return found
    finally:
        consumer.close()


def kafka_python_read(bootstrap: str, topic: str, isolation: str, expected: int) -> Values:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
        group_id=None, request_timeout_ms=int(TIMEOUT_S * 1000),
    )  # fmt: skip
    try:
        partitions = [KafkaPythonPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: Values = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + TIMEOUT_S
        while _count(found) < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                found[tp.partition] += [record.value for record in records]
        for tp, records in consumer.poll(timeout_ms=int(QUIET_S * 1000)).items():
            found[tp.partition] += [record.value for record in records]
        return found
    finally:
        consumer.close()


# -- a mixed workload -----------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    topic: str
    committed: Values  # what read_committed must return
    everything: Values  # what read_uncommitted must return


async def write_mixed(bootstrap: str, topic: str, seed: int) -> Workload:
    """Two transactional producers interleaved with a plain one over the topic's
    partitions, each transaction committed or aborted at random; one left open at the end.
    Every send waits for its acknowledgement, so the log order is the order sent."""
    rng = random.Random(seed)
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    txns = {name: AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique_name(name))
            for name in ("left", "right")}  # fmt: skip
    written: list[tuple[int, bytes, str]] = []  # partition, value, owner ("" for plain)
    outcomes: dict[str, bool] = {"": True}
    await asyncio.gather(plain.start(), *(p.start() for p in txns.values()))
    try:
        for round_ in range(5):
            for producer in txns.values():
                await producer.begin_transaction()
            for i in range(8):
                name = rng.choice(["", "left", "right"])
                producer = txns[name] if name else plain
                partition = rng.randrange(PARTITIONS)
                value = f"{name or 'plain'}-{round_}-{i}".encode()
                await producer.send_and_wait(topic, value, partition=partition)
                written.append((partition, value, f"{name}-{round_}" if name else ""))
            for name, producer in txns.items():
                commit = (round_ + (name == "right")) % 2 == 0 or rng.random() < 0.3
                outcomes[f"{name}-{round_}"] = commit
                await (producer.commit_transaction() if commit else producer.abort_transaction())
        # Left open: nothing written after it, so it hides nothing committed.
        await txns["left"].begin_transaction()
        await txns["left"].send_and_wait(topic, b"open", partition=0)
        written.append((0, b"open", "open"))
        outcomes["open"] = False
    finally:
        await asyncio.gather(plain.stop(), txns["right"].stop())
    committed: Values = {p: [] for p in range(PARTITIONS)}
    everything: Values = {p: [] for p in range(PARTITIONS)}
    for partition, value, owner in written:
        everything[partition].append(value)
        if outcomes[owner]:
            committed[partition].append(value)
    assert set(outcomes.values()) == {True, False}
    return Workload(topic, committed, everything)


@pytest.fixture(scope="module")
def mixed(module_broker: BrokerProcess) -> Workload:
    topic = unique_name("mixed")
    create_topic(module_broker.bootstrap, topic, PARTITIONS)
    return run(write_mixed(module_broker.bootstrap, topic, seed=7))


def test_read_committed_aiokafka(module_broker: BrokerProcess, mixed: Workload) -> None:
    expected = _count(mixed.committed)
    found = run(aiokafka_read(module_broker.bootstrap, mixed.topic, "read_committed", expected))
    assert found == mixed.committed


def test_read_committed_confluent(module_broker: BrokerProcess, mixed: Workload) -> None:
    expected = _count(mixed.committed)
    assert confluent_read(module_broker.bootstrap, mixed.topic, "read_committed", expected) == (
        mixed.committed
    )


def test_read_committed_kafka_python(module_broker: BrokerProcess, mixed: Workload) -> None:
    expected = _count(mixed.committed)
    found = kafka_python_read(module_broker.bootstrap, mixed.topic, "read_committed", expected)
    assert found == mixed.committed


def test_read_uncommitted_sees_everything(module_broker: BrokerProcess, mixed: Workload) -> None:
    expected = _count(mixed.everything)
    bootstrap = module_broker.bootstrap
    assert run(aiokafka_read(bootstrap, mixed.topic, "read_uncommitted", expected)) == (
        mixed.everything
    )
    assert confluent_read(bootstrap, mixed.topic, "read_uncommitted", expected) == (
        mixed.everything
    )
    assert kafka_python_read(bootstrap, mixed.topic, "read_uncommitted", expected) == (
        mixed.everything
    )


# -- aiokafka's transactional producer ------------------------------------------------------


async def aiokafka_committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def started_producer(bootstrap: str, transactional_id: str, **config: Any) -> Any:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=transactional_id, **config
    )
    await producer.start()
    return producer


def test_aiokafka_commit_abort_and_offsets(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, group = unique_name("aio-txn"), unique_name("aio-group")
    source = TopicPartition(unique_name("aio-source"), 0)

    async def scenario() -> None:
        producer = await started_producer(bootstrap, unique_name("aio"))
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-1", partition=0)
                await producer.send_offsets_to_transaction({source: 10}, group)
                # Held in the transaction: the group does not see it yet.
                assert await aiokafka_committed(bootstrap, group, source) is None
            assert await aiokafka_committed(bootstrap, group, source) == 10
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted", partition=0)
            await producer.send_offsets_to_transaction({source: 20}, group)
            await producer.abort_transaction()
            assert await aiokafka_committed(bootstrap, group, source) == 10
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed-2", partition=0)
        finally:
            await producer.stop()
        committed = await aiokafka_read(bootstrap, topic, "read_committed", 2)
        assert committed[0] == [b"committed-1", b"committed-2"]
        everything = await aiokafka_read(bootstrap, topic, "read_uncommitted", 3)
        assert everything[0] == [b"committed-1", b"aborted", b"committed-2"]

    create_topic(bootstrap, topic, PARTITIONS)
    run(scenario())


def test_aiokafka_zombie_is_fenced(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, transactional_id = unique_name("aio-fence"), unique_name("aio-fenced")

    async def scenario() -> None:
        zombie = await started_producer(bootstrap, transactional_id)
        successor = None
        try:
            await zombie.begin_transaction()
            await zombie.send_and_wait(topic, b"zombie", partition=0)
            successor = await started_producer(bootstrap, transactional_id)
            with pytest.raises(ProducerFenced):
                await zombie.commit_transaction()
            async with successor.transaction():
                await successor.send_and_wait(topic, b"successor", partition=0)
        finally:
            await asyncio.gather(zombie.stop(), *([successor.stop()] if successor else []),
                                 return_exceptions=True)  # fmt: skip
        assert (await aiokafka_read(bootstrap, topic, "read_committed", 1))[0] == [b"successor"]

    create_topic(bootstrap, topic, PARTITIONS)
    run(scenario())


@pytest.mark.parametrize("how", BROKER_STOPS)
def test_aiokafka_broker_restart_mid_transaction(broker: BrokerProcess, how: str) -> None:
    """The committed transaction stays; the open one is aborted: by the next producer's
    init after SIGKILL, by its timeout after SIGTERM (no producer comes back)."""
    topic, transactional_id = unique_name("aio-restart"), unique_name("aio-restart")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    async def scenario() -> None:
        old = await started_producer(
            broker.bootstrap, transactional_id, transaction_timeout_ms=2_000
        )
        async with old.transaction():
            await old.send_and_wait(topic, b"before", partition=0)
        await old.begin_transaction()
        await old.send_and_wait(topic, b"open", partition=0)
        await old.send_and_wait(topic, b"open", partition=1)
        await asyncio.to_thread(stop_broker, broker, how)
        restarted = await asyncio.to_thread(broker.restart)
        try:
            if how == "sigkill":
                successor = await started_producer(restarted.bootstrap, transactional_id)
                async with successor.transaction():
                    await successor.send_and_wait(topic, b"after", partition=1)
                await successor.stop()
            else:  # behind the open transaction: readable once its timeout aborts it
                plain = AIOKafkaProducer(bootstrap_servers=restarted.bootstrap, acks="all")
                await plain.start()
                await plain.send_and_wait(topic, b"after", partition=1)
                await plain.stop()
            found = await aiokafka_read(restarted.bootstrap, topic, "read_committed", 2)
            assert found == {0: [b"before"], 1: [b"after"], 2: []}
            uncommitted = await aiokafka_read(restarted.bootstrap, topic, "read_uncommitted", 4)
            assert uncommitted == {0: [b"before", b"open"], 1: [b"open", b"after"], 2: []}
            with pytest.raises(ProducerFenced):  # the old producer is a zombie now
                await old.commit_transaction()
        finally:
            await asyncio.wait_for(old.stop(), TIMEOUT_S)
            restarted.kill()

    run(scenario())


# -- confluent-kafka's transactional producer -----------------------------------------------


def confluent_producer(bootstrap: str, transactional_id: str, **config: Any) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         **config})  # fmt: skip
    producer.init_transactions(TIMEOUT_S)
    return producer


def confluent_committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (found,) = consumer.committed([ConfluentPartition(topic, 0)], TIMEOUT_S)
        return int(found.offset)
    finally:
        consumer.close()


def test_confluent_commit_abort_and_offsets(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, group, source = unique_name("ck-txn"), unique_name("ck-group"), unique_name("ck-in")
    create_topic(bootstrap, topic, PARTITIONS)
    producer = confluent_producer(bootstrap, unique_name("ck"))
    metadata = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        producer.begin_transaction()
        producer.produce(topic, b"committed-1", partition=0)
        producer.send_offsets_to_transaction(
            [ConfluentPartition(source, 0, 10)], metadata.consumer_group_metadata(), TIMEOUT_S
        )
        assert confluent_committed(bootstrap, group, source) < 0  # not yet
        producer.commit_transaction(TIMEOUT_S)
        assert confluent_committed(bootstrap, group, source) == 10
        producer.begin_transaction()
        producer.produce(topic, b"aborted", partition=0)
        producer.send_offsets_to_transaction(
            [ConfluentPartition(source, 0, 20)], metadata.consumer_group_metadata(), TIMEOUT_S
        )
        producer.abort_transaction(TIMEOUT_S)
        assert confluent_committed(bootstrap, group, source) == 10
        producer.begin_transaction()
        producer.produce(topic, b"committed-2", partition=2)
        producer.commit_transaction(TIMEOUT_S)
    finally:
        metadata.close()
    found = confluent_read(bootstrap, topic, "read_committed", 2)
    assert found == {0: [b"committed-1"], 1: [], 2: [b"committed-2"]}


def test_confluent_zombie_gets_a_fatal_fenced_error(module_broker: BrokerProcess) -> None:
    bootstrap = module_broker.bootstrap
    topic, transactional_id = unique_name("ck-fence"), unique_name("ck-fenced")
    create_topic(bootstrap, topic, PARTITIONS)
    zombie = confluent_producer(bootstrap, transactional_id)
    zombie.begin_transaction()
    zombie.produce(topic, b"zombie", partition=0)
    assert zombie.flush(TIMEOUT_S) == 0
    successor = confluent_producer(bootstrap, transactional_id)
    with pytest.raises(KafkaException) as refused:
        zombie.commit_transaction(TIMEOUT_S)
    error = refused.value.args[0]
    assert error.fatal() and error.code() == KafkaError._FENCED
    successor.begin_transaction()
    successor.produce(topic, b"successor", partition=0)
    successor.commit_transaction(TIMEOUT_S)
    assert confluent_read(bootstrap, topic, "read_committed", 1)[0] == [b"successor"]


def test_confluent_broker_restart_mid_transaction(broker: BrokerProcess) -> None:
    topic, transactional_id = unique_name("ck-restart"), unique_name("ck-restart")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    producer = confluent_producer(broker.bootstrap, transactional_id)
    producer.begin_transaction()
    producer.produce(topic, b"before", partition=0)
    producer.commit_transaction(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, b"open", partition=1)
    assert producer.flush(TIMEOUT_S) == 0
    broker.kill()
    restarted = broker.restart()
    try:
        successor = confluent_producer(restarted.bootstrap, transactional_id)
        successor.begin_transaction()
        successor.produce(topic, b"after", partition=1)
        successor.commit_transaction(TIMEOUT_S)
        found = confluent_read(restarted.bootstrap, topic, "read_committed", 2)
        assert found == {0: [b"before"], 1: [b"after"], 2: []}
    finally:
        restarted.kill()


@pytest.fixture
def paused(broker: BrokerProcess) -> Iterator[BrokerProcess]:
    """The broker, resumed at the end even if the test stopped it with SIGSTOP."""
    yield broker
    assert broker.process is not None
    if broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)


def test_confluent_recovers_from_an_abortable_error_with_an_epoch_bump(
    paused: BrokerProcess,
) -> None:
    """A message times out while the broker is paused: librdkafka marks the transaction
    abortable and requiring an epoch bump, aborts it and bumps its epoch with
    InitProducerId v3+ (KIP-360), then carries on with the same producer."""
    assert paused.process is not None
    topic = unique_name("ck-kip360")
    create_topic(paused.bootstrap, topic, PARTITIONS)
    transactional_id = unique_name("ck-kip360")
    producer = confluent_producer(
        paused.bootstrap, transactional_id, **{"message.timeout.ms": 1_500}
    )
    producer.begin_transaction()
    producer.produce(topic, b"aborted", partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    os.kill(paused.process.pid, signal.SIGSTOP)
    failed: list[KafkaError] = []
    producer.produce(topic, b"timed out", partition=0, on_delivery=lambda e, _: failed.append(e))
    producer.flush(TIMEOUT_S)
    os.kill(paused.process.pid, signal.SIGCONT)
    assert [error.code() for error in failed] == [KafkaError._MSG_TIMED_OUT]
    time.sleep(0.5)  # the broker reads the timed-out request still in its socket
    with pytest.raises(KafkaException) as refused:
        producer.commit_transaction(TIMEOUT_S)
    error = refused.value.args[0]
    assert error.txn_requires_abort() and not error.fatal()
    producer.abort_transaction(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, b"recovered", partition=0)
    producer.commit_transaction(TIMEOUT_S)
    found = confluent_read(paused.bootstrap, topic, "read_committed", 1)
    assert found == {0: [b"recovered"], 1: [], 2: []}
    # The coordinator's record of it: bumped once, at the producer's request (it named
    # its epoch 0, which is remembered for a retry), not fenced.
    del producer
    assert paused.stop() == 0
    log = Log.open(paused.data)
    try:
        txn = TransactionLog(log, log.clock).load()[transactional_id]
    finally:
        log.close()
    assert (txn.producer_epoch, txn.last_producer_epoch) == (1, 0)
    assert txn.state is TransactionState.COMPLETE_COMMIT
