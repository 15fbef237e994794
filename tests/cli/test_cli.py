"""The real ``streamer`` command, run as a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import streamer


def _streamer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("streamer") or str(Path(sys.executable).parent / "streamer")
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_version_and_help() -> None:
    version = _streamer("--version")
    assert version.returncode == 0, version.stderr
    assert streamer.__version__ in version.stdout
    help_text = _streamer("--help")
    assert help_text.returncode == 0
    assert "bench" in help_text.stdout


def test_bench_log_prints_figures_as_json(tmp_path: Path) -> None:
    result = _streamer(
        "bench", "log", "--total-mib", "4", "--runs", "2", "--json", "--data", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    measurements = {m["key"]: m for m in report["measurements"]}
    assert {"append_os", "append_fsync_per_mib", "append_fsync_per_append", "read"} <= set(
        measurements
    )
    for key in ("append_os", "append_fsync_per_mib", "read"):
        figures = measurements[key]
        assert figures["runs"] == 2 and len(figures["seconds"]) == 2
        spread = figures["mb_per_s"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        assert figures["records_per_s"]["median"] > 0
    assert report["settings"]["records_per_batch"] > 1
    # --data keeps the folder, but each run's topic is deleted after it is measured
    assert tmp_path.is_dir()


def test_bench_log_refuses_nonsense() -> None:
    result = _streamer("bench", "log", "--runs", "0")
    assert result.returncode != 0
    assert result.stderr
