"""``streamer top``'s drawing and keys, without a terminal: ``render(frame)`` is pure, so a
fixed frame drawn by a recording console of a fixed size must give the same text as the
golden files in ``tests/golden/`` (``STREAMER_UPDATE_GOLDEN=1`` rewrites them); the keys are
a reducer over the view's state."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest
from rich.console import Console
from streamer.cli.top import split_keys
from streamer.cli.top_panels import lag_style, sparkline
from streamer.cli.top_render import render, render_header
from streamer.cli.top_view import (
    FOCUSES,
    TopFrame,
    ViewState,
    apply_key,
    build_frame,
    event_rows,
    overview_rows,
    partition_rows,
)

from tests.cli.top_frames import (
    NOW_MS,
    joins_frame,
    overview_frame,
    worker_frame,
    worker_snapshot,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("STREAMER_UPDATE_GOLDEN") == "1"
HEIGHT = 30


def _text(frame: TopFrame, state: ViewState, width: int, height: int | None,
          plain: bool = False) -> str:
    console = Console(record=True, width=width, height=height or HEIGHT, file=io.StringIO(),
                      color_system=None, legacy_windows=False, force_terminal=not plain)
    console.print(render(frame, state, width=width, height=height, plain=plain), height=height)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with STREAMER_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs (STREAMER_UPDATE_GOLDEN=1 rewrites it):\n{text}")


@pytest.mark.parametrize("width", [80, 140])
def test_the_full_screen_matches_its_golden_file(width: int) -> None:
    text = _text(worker_frame(), ViewState(), width, HEIGHT)
    assert len(text.splitlines()) == HEIGHT
    assert max(len(line) for line in text.splitlines()) <= width
    _check(f"top_workers_{width}x{HEIGHT}.txt", text)


@pytest.mark.parametrize("width", [80, 140])
def test_the_log_overview_matches_its_golden_file(width: int) -> None:
    _check(f"top_overview_{width}x{HEIGHT}.txt",
           _text(overview_frame(), ViewState(), width, HEIGHT))


def test_once_and_plain_output_match_their_golden_files() -> None:
    _check("top_once_100.txt", _text(worker_frame(), ViewState(), 100, None))
    _check("top_plain_100.txt", _text(worker_frame(), ViewState(), 100, None, plain=True))


@pytest.mark.parametrize("width", [80, 140])
def test_joins_and_transactions_match_their_golden_files(width: int) -> None:
    text = _text(joins_frame(), ViewState(), width, HEIGHT)
    assert len(text.splitlines()) == HEIGHT
    assert max(len(line) for line in text.splitlines()) <= width
    _check(f"top_joins_{width}x{HEIGHT}.txt", text)


def test_joins_are_summed_over_workers_and_transactions_shown() -> None:
    text = _text(joins_frame(), ViewState(), 160, None, plain=True)
    assert "exactly-once  7,400 txns 1 aborted" in text
    lines = {line.split()[0]: line.split() for line in text.splitlines()
             if line.startswith(("orders-", "accounts-join"))}
    # the window join's two workers: 120,511 + 30,002 in, 8,004 + 1,990 held, 12 late
    assert lines["orders-payments-join-600000ms-600000ms"][1:] == [
        "window", "left", "150,513", "9,994", "12", "147,872"]
    assert lines["orders-rates-asof"][1:] == ["as-of", "inner", "130,000", "310", "0",
                                              "120,500"]
    assert lines["accounts-join-limits"][1:] == ["table", "outer", "–", "–", "–", "27,300"]
    assert lines["orders-join-customers"][1:] == ["stream-table", "left", "150,000", "–", "–",
                                                  "150,000"]
    focused = _text(joins_frame(), ViewState(focus="joins"), 100, HEIGHT)
    assert "orders-rates-asof" in focused and "process_order" not in focused


def test_the_screen_reads_at_80_columns() -> None:
    text = _text(worker_frame(), ViewState(), 80, HEIGHT)
    lines = text.splitlines()
    assert lines[0].startswith(" orders-app   2 workers  RUNNING")
    assert "orders[1]" in text and "total (7)" in text and "process_order" in text
    assert "KeyError: 'sku' (17×)" in text  # one worker's 17, folded
    assert lines[-1].startswith(" q quit  p pause  s sort:lag")


def test_focus_help_filter_and_pause_change_the_screen() -> None:
    frame = worker_frame()
    focused = _text(frame, ViewState(focus="events"), 100, HEIGHT)
    assert "partitions (by" not in focused and "events / errors" in focused
    assert "recovering → running" in focused
    helped = _text(frame, ViewState(help=True), 100, HEIGHT)
    assert "filter partitions by a topic[partition] substring" in helped
    filtered = _text(frame, ViewState(filter="pay", only_lagging=True, paused=True), 100, HEIGHT)
    partitions = filtered.split("─ agents ─")[0]
    assert "payments[1]" in partitions and "payments[0]" not in partitions
    assert "orders[1]" not in partitions and "PAUSED" in filtered
    assert "filter 'pay' · lagging only" in filtered
    editing = _text(frame, ViewState(editing="ord"), 100, HEIGHT)
    assert editing.splitlines()[-1].startswith(" filter: ord")
    tables = _text(frame, ViewState(focus="tables"), 100, HEIGHT)
    assert "24% of 17,000" in tables
    log = _text(frame, ViewState(focus="log"), 100, HEIGHT)
    assert "__streamer_workers[0]" in log


def test_names_are_never_read_as_markup() -> None:
    snap = worker_snapshot()
    odd = dataclasses.replace(snap.partitions[0], topic="a[bold]b")
    frame = build_frame("b", {snap.worker: dataclasses.replace(snap, partitions=(odd,))},
                        app=None, now_ms=NOW_MS)
    assert "a[bold]b[0]" in _text(frame, ViewState(), 100, HEIGHT)


def test_partitions_sort_by_lag_rate_or_name_and_filter() -> None:
    frame = worker_frame()
    by_lag = [(p.topic, p.partition) for p in partition_rows(frame, ViewState())]
    assert by_lag[:3] == [("orders-app-by_sku-repartition", 0), ("orders", 1), ("payments", 1)]
    by_rate = partition_rows(frame, ViewState(sort="rate"))
    assert [p.rate for p in by_rate] == sorted((p.rate for p in by_rate), reverse=True)
    by_name = [(p.topic, p.partition) for p in partition_rows(frame, ViewState(sort="name"))]
    assert by_name == sorted(by_name)
    lagging = partition_rows(frame, ViewState(only_lagging=True))
    assert lagging and all((p.lag or 0) > 0 for p in lagging)
    assert [p.partition for p in partition_rows(frame, ViewState(filter="ORDERS["))] == [1, 0,
                                                                                        2, 3]


def test_overview_rows_pair_partitions_with_each_group() -> None:
    log = overview_frame().overview
    assert log is not None
    rows = overview_rows(log, ViewState())
    assert [(r.partition.topic, r.partition.partition, r.group, r.lag) for r in rows][:2] == [
        ("orders", 1, "orders-app", 4_400), ("payments", 0, "billing", 1_000)]
    assert ("__streamer_workers", 0, None, None) in [
        (r.partition.topic, r.partition.partition, r.group, r.lag) for r in rows]
    assert len(overview_rows(log, ViewState(only_lagging=True))) == 3


def test_frames_keep_live_workers_of_one_app() -> None:
    frame = worker_frame()
    assert frame.app == "orders-app" and frame.other_apps == ("other",)
    assert [w.worker for w in frame.workers] == ["orders-app@host-a:4101",
                                                 "orders-app@host-b:4102"]
    assert [w.worker for w in frame.gone] == ["orders-app@host-c:4103"]
    silent = worker_snapshot(at_ms=NOW_MS - 6_000)
    assert build_frame("b", {silent.worker: silent}, app=None, now_ms=NOW_MS).workers == ()
    errors = [e for e in event_rows(frame) if e.kind == "error"]
    assert [(e.source, e.count) for e in errors] == [("enrich", 17)]


def test_keys_drive_the_view_state() -> None:
    state = ViewState()
    for key in "sslpf":
        state = apply_key(state, key)
    assert (state.sort, state.only_lagging, state.paused, state.focus) == (
        "name", True, True, "partitions")
    for key in ["/", "v", "i", "x", "\x7f", "e", "w", "\r"]:
        state = apply_key(state, key)
    assert state.filter == "view" and state.editing is None
    state = apply_key(apply_key(state, "/"), "\x1b")  # Escape drops the edit, keeps the filter
    assert state.filter == "view"
    state = apply_key(state, "\x1b")  # Escape outside editing: back to the whole screen
    assert state.focus is None and state.filter == ""
    state = apply_key(state, "?")
    assert state.help and not apply_key(state, "x").help
    assert apply_key(state, "q").quit and apply_key(ViewState(), "\x03").quit
    assert apply_key(ViewState(editing=""), "q").editing == "q"  # typing, not quitting
    focus = ViewState()
    seen = []
    for _ in FOCUSES:
        focus = apply_key(focus, "\t")
        seen.append(focus.focus)
    assert seen == [*FOCUSES[1:], None]


def test_escape_sequences_are_not_keys() -> None:
    assert list(split_keys("q\x1b[A\x1bOPs\x1b[15~\x1b")) == ["q", "s", "\x1b"]


def test_sparklines_and_lag_colours() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5], 4) == "  ██"
    assert sparkline([0, 0], 2) == "▁▁"
    assert lag_style(0, 10.0) == "green"
    assert lag_style(500, 10.0) == "yellow"
    assert lag_style(5_000, 10.0) == "bold red"
    assert lag_style(5_000, 1_000.0) == "yellow"  # five seconds of input: catching up
    assert lag_style(None, 0.0) == "dim"


def test_the_header_drops_detail_to_fit() -> None:
    frame = worker_frame()
    wide = render_header(frame, ViewState(), 200).plain
    assert "rebalances 6" in wide and "log 127.0.0.1:40123" in wide
    narrow = render_header(frame, ViewState(paused=True), 60).plain
    assert len(narrow) <= 60 and "RUNNING" in narrow and "PAUSED" in narrow
    assert "log 127" not in narrow
