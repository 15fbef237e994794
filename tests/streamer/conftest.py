"""Fixtures of the framework tests: ``target`` runs a test on both transports."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.broker_process import BrokerProcess
from tests.streamer.running import Target


class BrokerPool:
    """A fresh ``streamer broker`` for each test, the next one started while the current
    test runs: starting one takes about as long as many of these tests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._started = 0
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-pool")
        self._spare: Future[BrokerProcess] | None = None

    def _start(self) -> BrokerProcess:
        self._started += 1  # one starter thread: no race
        return BrokerProcess(self.root / f"broker-{self._started}").start()

    def take(self) -> BrokerProcess:
        spare = self._spare or self._starter.submit(self._start)
        self._spare = self._starter.submit(self._start)
        return spare.result()

    def close(self) -> None:
        if self._spare is not None:
            self._spare.result().kill()
        self._starter.shutdown()


@pytest.fixture(scope="session")
def broker_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerPool]:
    pool = BrokerPool(tmp_path_factory.mktemp("brokers"))
    yield pool
    pool.close()


@pytest.fixture(params=["embedded", "kafka"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, broker_pool: BrokerPool
) -> Iterator[Target]:
    """Where the test's apps keep their log: ``embedded``, a folder opened by the app's own
    worker (durable, so a restarted worker resumes); ``kafka``, a ``streamer broker``
    subprocess of the test's own, reached over the Kafka protocol."""
    if request.param == "embedded":
        yield Target("embedded", str(tmp_path / "log"))
        return
    broker = broker_pool.take()
    try:
        yield Target("kafka", f"kafka://{broker.bootstrap}")
    finally:
        broker.kill()
