"""The install maps the folders into ``streamer.*`` and installs no generic top-level module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_from_elsewhere(module: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Run from an empty folder, so only what is installed can be imported.
    return subprocess.run(
        [sys.executable, "-c", f"import {module}; print({module}.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )


def test_subpackages_import_under_streamer(tmp_path: Path) -> None:
    for module, folder in [("streamer.log", "log"), ("streamer.state", "state"),
                           ("streamer.operators", "operators"), ("streamer.cli", "cli")]:
        result = _import_from_elsewhere(module, tmp_path)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).parent == ROOT / folder


def test_no_generic_top_level_modules(tmp_path: Path) -> None:
    for module in ("log", "state", "operators", "cli"):
        result = _import_from_elsewhere(module, tmp_path)
        assert result.returncode != 0
        assert "ModuleNotFoundError" in result.stderr


def test_wheel_holds_only_the_streamer_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("streamer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names}
    name, version = wheel.name.split("-")[:2]
    assert top_levels == {"streamer", f"{name}-{version}.dist-info"}
    assert "streamer/log/partition.py" in names
    assert "streamer/py.typed" in names
    # Every package in the source folders ships (the package list is explicit).
    folders = {"streamer": "streamer", "log": "streamer/log", "state": "streamer/state",
               "operators": "streamer/operators", "cli": "streamer/cli"}
    for folder, prefix in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            shipped = f"{prefix}/{init.parent.relative_to(ROOT / folder).as_posix()}/__init__.py"
            assert shipped.replace("/./", "/") in names, f"{init.parent} is not packaged"
