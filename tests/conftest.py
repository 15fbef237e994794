"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# In CI, hypothesis replays the same examples on every run, so a red CI is always
# reproducible; locally it explores new ones each time (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
