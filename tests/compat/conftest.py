"""Fixtures of the client compatibility tests.

Each client's module shares one ``streamer broker`` subprocess (``module_broker``): a broker
starts in well under a second, but the tests are many, and every test uses topics and
groups of its own (:func:`~tests.compat.workload.unique_name`), so they do not see each
other. Tests that restart or kill the broker take the function-scoped ``broker`` fixture of
``tests/conftest.py`` instead.

When a test fails, the log of every broker it used (the module's, its own, and any it
restarted) is printed after it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.broker_process import BrokerProcess, running_broker

BROKER_LOG_TAIL_LINES = 40


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("compat-broker")) as process:
        yield process


@pytest.fixture(autouse=True)
def _broker_logs_on_failure(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    started: list[BrokerProcess] = []
    start = BrokerProcess.start

    def recording_start(process: BrokerProcess) -> BrokerProcess:
        started.append(process)
        return start(process)

    monkeypatch.setattr(BrokerProcess, "start", recording_start)
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    shared = [request.node.funcargs.get(name) for name in ("module_broker", "broker")]
    used = [p for p in shared if isinstance(p, BrokerProcess)]
    for process in used + [p for p in started if all(p is not u for u in used)]:
        print(f"--- broker on {process.bootstrap}, data {process.data} "
              f"(last {BROKER_LOG_TAIL_LINES} lines of its log) ---")
        print("".join(process.output[-BROKER_LOG_TAIL_LINES:]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # read by _broker_logs_on_failure
    return report
