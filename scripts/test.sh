#!/usr/bin/env bash
# Install streamer with its test extras into .venv and run lint, types and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
ruff check .
mypy
python -m pytest -q "$@"
