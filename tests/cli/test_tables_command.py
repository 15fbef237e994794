"""`streamer tables get|list` as a user runs them: a real worker of ``examples.page_counts``
counts page views into tables, and the command, in a subprocess of its own, reads them from
the changelogs, through the worker's served log (embedded) or a ``streamer broker``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from streamer.cli.main import main
from streamer.cli.tables import value_json, value_text
from streamer.cli.tables_changelog import changelog_topic, parse_key, read_changelog, window_of

from streamer.partitioner import KeyPartitioner
from tests.broker_process import running_broker
from tests.streamer.running import REPO_ROOT, WorkerProcess, produce, run

RUN_TIMEOUT_S = 60
APP = "page-counts"
SPEC = "examples.page_counts:app"
PARTITIONS = 4
PAGES = [f"/p{i}" for i in range(10)]
VIEWS = 300
PROCESSED_TIMEOUT_S = 30.0
WINDOWED_TABLE = "per-minute"  # written by the test, as windowed tables write theirs
DELETED_TABLE = "removed"  # written by the test too
MINUTE_MS = 60_000

_partitioner = KeyPartitioner()


def _streamer(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli.main", *args], capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, cwd=REPO_ROOT,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@dataclass(frozen=True)
class Job:
    broker: str  # what --broker is given: the log's folder, or the broker's address
    url: str  # where the test reads the log itself: kafka://HOST:PORT
    counts: dict[str, int]
    last_users: dict[str, str]

    def tables(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _streamer("tables", *args, "--broker", self.broker)

    def ok(self, *args: str) -> str:
        result = self.tables(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout


def _views() -> list[dict[str, str]]:
    return [{"page": PAGES[(i * 7) % len(PAGES)], "user": f"u{i}"} for i in range(VIEWS)]


async def _produce_views(url: str, views: list[dict[str, str]]) -> None:
    """Keyed by page, so each page's views stay in order through the re-keying."""
    pages = [view["page"].encode() for view in views]
    await produce(url, "page-counts-views",
                  ((page, json.dumps(view).encode()) for page, view in zip(pages, views,
                                                                           strict=True)),
                  partitions=PARTITIONS,
                  partition_of=lambda i: _partitioner.partition(pages[i], PARTITIONS))


def _window_key(*parts: Any) -> bytes:
    return json.dumps(list(parts), separators=(",", ":")).encode()


async def _produce_windows(url: str) -> None:
    """A windowed table's changelog, as workers write it: windows of /p1 in both layouts
    (one overwritten, one deleted), a sliding window's record accumulator, another key's
    window, all in /p1's partition."""
    records: list[tuple[bytes, bytes | None]] = [
        (_window_key("/p1", MINUTE_MS, 2 * MINUTE_MS), b"2"),
        (_window_key("w", "/p1", 0, MINUTE_MS), b"5"),
        (_window_key("/p1", MINUTE_MS, 2 * MINUTE_MS), b"3"),
        (_window_key("/p1", 2 * MINUTE_MS, 3 * MINUTE_MS), b"1"),
        (_window_key("/p1", 2 * MINUTE_MS, 3 * MINUTE_MS), None),
        (_window_key("r", "/p1", 1_000), b"1"),
        (_window_key("/p10", 0, MINUTE_MS), b"9"),
        (b"__watermark__", b"180000"),
    ]
    partition = _partitioner.partition(b"/p1", PARTITIONS)
    await produce(url, changelog_topic(APP, WINDOWED_TABLE), records, partitions=PARTITIONS,
                  partition_of=lambda _: partition)


async def _produce_a_delete(url: str) -> None:
    """A table whose one key was set, then deleted (a None value: a tombstone)."""
    partition = _partitioner.partition(b"/gone", PARTITIONS)
    await produce(url, changelog_topic(APP, DELETED_TABLE), [(b"/gone", b"1"), (b"/gone", None)],
                  partitions=PARTITIONS, partition_of=lambda _: partition)


async def _counted(url: str) -> int:
    latest = await read_changelog([url.removeprefix("kafka://")], 10.0,
                                  changelog_topic(APP, "views"), range(PARTITIONS))
    return sum(int(r.value) for r in latest.values() if r.value is not None)


async def _wait_for_counts(url: str, worker: WorkerProcess) -> None:
    """Until the views table counts every view (the worker checkpointed them all)."""
    total = 0
    while total < VIEWS:
        assert worker.process.poll() is None, worker.output
        total = await _counted(url)
        await asyncio.sleep(0.1)
    assert total == VIEWS, total


@pytest.fixture(scope="module", params=["embedded", "kafka"])
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Job]:
    folder = tmp_path_factory.mktemp(f"tables-{request.param}")
    views = _views()
    env = {"PAGE_COUNTS_STATE": str(folder / "state")}
    brokers = running_broker(folder / "broker-data") if request.param == "kafka" else None
    with brokers or contextlib.nullcontext() as broker:
        log = str(folder / "log") if broker is None else f"kafka://{broker.bootstrap}"
        run(_produce_views(log, views))
        run(_produce_windows(log))
        run(_produce_a_delete(log))
        worker = WorkerProcess(SPEC, log, env=env)
        try:
            run(worker.wait_for_line(r"worker of page-counts running on"))
            if broker is None:
                run(worker.wait_for_line(r"the log is served at "))
                served = worker.find(r"the log is served at (\S+)")[0].group(1)
                url, cli_broker = f"kafka://{served}", log
            else:
                url = cli_broker = f"kafka://{broker.bootstrap}"
            run(_wait_for_counts(url, worker), PROCESSED_TIMEOUT_S)
            last_users = {view["page"]: view["user"] for view in views}
            yield Job(cli_broker, url, dict(Counter(v["page"] for v in views)), last_users)
        finally:
            assert worker.terminate() == 0, worker.output


# -- against a running worker -----------------------------------------------------------------


def test_get_prints_the_value_as_of_the_last_checkpoint(job: Job) -> None:
    assert job.ok("get", APP, "views", "/p3").strip() == str(job.counts["/p3"])
    last = json.loads(job.ok("get", APP, "last-view", "/p3"))
    assert last == {"page": "/p3", "user": job.last_users["/p3"]}


def test_get_json_is_one_line_naming_the_partition_and_offset(job: Job) -> None:
    out = job.ok("get", APP, "last-view", "/p5", "--json")
    assert out.count("\n") == 1
    document = json.loads(out)
    assert document["value"] == {"page": "/p5", "user": job.last_users["/p5"]}
    assert document["partition"] == _partitioner.partition(b"/p5", PARTITIONS)
    assert {k: document[k] for k in ("app", "table", "key")} == {
        "app": APP, "table": "last-view", "key": "/p5"}
    assert isinstance(document["offset"], int) and document["offset"] >= 0
    same = json.loads(job.ok("get", APP, "views", '"/p5"', "--key-json", "--json"))
    assert same["key"] == "/p5" and same["value"] == job.counts["/p5"]


def test_an_absent_key_exits_1_saying_so(job: Job) -> None:
    result = job.tables("get", APP, "views", "/nowhere")
    assert result.returncode == 1 and result.stdout == ""
    partition = _partitioner.partition(b"/nowhere", PARTITIONS)
    assert ("key '/nowhere' in table 'views' of app 'page-counts': not found "
            f"(page-counts-views-changelog[{partition}] read to its end)") in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_deleted_key_exits_1_naming_the_tombstone(job: Job) -> None:
    result = job.tables("get", APP, DELETED_TABLE, "/gone", "--json")
    partition = _partitioner.partition(b"/gone", PARTITIONS)
    assert result.returncode == 1 and result.stdout == ""
    assert ("key '/gone' in table 'removed' of app 'page-counts': not found: deleted at "
            f"offset 1 of page-counts-removed-changelog[{partition}]") in result.stderr


def test_an_unknown_table_exits_1_naming_the_tables_there_are(job: Job) -> None:
    result = job.tables("get", APP, "viewz", "/p1")
    assert result.returncode == 1
    assert ("app 'page-counts' has no table 'viewz': no topic 'page-counts-viewz-changelog' "
            "(its tables: last-view, per-minute, removed, views)") in result.stderr
    result = job.tables("list", "no-such-app")
    assert result.returncode == 1 and "app 'no-such-app' has no tables" in result.stderr


def test_windowed_prints_every_live_window_of_the_key_by_start(job: Job) -> None:
    lines = job.ok("get", APP, WINDOWED_TABLE, "/p1", "--windowed").splitlines()
    assert lines == [
        "1970-01-01T00:00:00.000Z  1970-01-01T00:01:00.000Z  5",
        "1970-01-01T00:01:00.000Z  1970-01-01T00:02:00.000Z  3",
    ]
    document = json.loads(job.ok("get", APP, WINDOWED_TABLE, "/p1", "--windowed", "--json"))
    assert [(w["start_ms"], w["end_ms"], w["value"]) for w in document["windows"]] == [
        (0, MINUTE_MS, 5), (MINUTE_MS, 2 * MINUTE_MS, 3)]
    result = job.tables("get", APP, WINDOWED_TABLE, "/p2", "--windowed")
    assert result.returncode == 1
    assert "key '/p2' in table 'per-minute' of app 'page-counts': no windows" in result.stderr


def test_list_shows_partitions_keys_and_end_offsets(job: Job) -> None:
    document = json.loads(job.ok("list", APP, "--json"))
    tables = {t["table"]: t for t in document["tables"]}
    assert sorted(tables) == ["last-view", "per-minute", "removed", "views"]
    assert tables["removed"]["keys"] == 0
    views = tables["views"]
    assert views["changelog_topic"] == "page-counts-views-changelog"
    assert views["keys"] == len(PAGES) and len(views["partitions"]) == PARTITIONS
    assert all(p["end_offset"] >= p["keys"] for p in views["partitions"])
    rows = [line.split() for line in job.ok("list", APP).splitlines()]
    assert rows[0] == ["TABLE", "PARTITIONS", "KEYS", "END", "OFFSETS"]
    assert rows[4][:3] == ["views", "4", "10"]


# -- without a worker -------------------------------------------------------------------------


def test_a_folder_without_a_running_worker_is_an_error_that_says_what_to_do(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["tables", "get", APP, "views", "/p1", "--broker",
                                 str(tmp_path)])
    assert empty.exit_code == 1 and "no worker serves the log in" in empty.output
    (tmp_path / "worker.json").write_text(json.dumps(
        {"host": "127.0.0.1", "port": 1, "pid": _dead_pid(), "app_id": APP}))
    stale = runner.invoke(main, ["tables", "list", APP, "--broker", str(tmp_path)])
    assert stale.exit_code == 1 and "is not running" in stale.output
    memory = runner.invoke(main, ["tables", "list", APP, "--broker", "memory://"])
    assert memory.exit_code == 2 and "lives inside its worker" in memory.output


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the pieces ---------------------------------------------------------------------------------


def test_keys_are_encoded_as_tables_encode_them() -> None:
    assert parse_key("/home", False).raw == b"/home"
    assert parse_key('"/home"', True).raw == b"/home"
    assert parse_key("42", True).raw == b"42" and parse_key("42", True).value == 42
    assert parse_key('["a", 1]', True).raw == b'["a",1]'
    with pytest.raises(Exception, match="not JSON"):
        parse_key("{", True)
    with pytest.raises(Exception, match="null"):
        parse_key("null", True)


def test_windows_are_found_in_both_layouts_and_nothing_else() -> None:
    key = parse_key("k", False)
    assert window_of(b'["k",0,10]', key) == (0, 10)
    assert window_of(b'["w","k",10,20]', key) == (10, 20)
    assert window_of(b'["r","k",5]', key) is None
    assert window_of(b'["k2",0,10]', key) is None
    assert window_of(b'["k","0",10]', key) is None
    assert window_of(b"k", key) is None
    assert window_of(b"[not json", key) is None
    number = parse_key("5", True)
    assert window_of(b'[5,0,10]', number) == (0, 10)
    assert window_of(b'["5",0,10]', number) == (0, 10)  # same bytes, same key


def test_values_are_shown_as_json_or_as_bytes() -> None:
    assert value_text(b'{"a":1}') == '{\n  "a": 1\n}'
    assert value_text(b'{"a":1}', pretty=False) == '{"a": 1}'
    assert value_text(b"plain") == "b'plain'"
    assert value_text(b"\xff") == "b'\\xff'"
    assert value_json(b"[1,2]") == [1, 2]
    assert value_json(b"\xff") == {"base64": "/w=="}
