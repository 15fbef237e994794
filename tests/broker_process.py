"""Start a real ``streamer broker`` as a subprocess, for tests that speak to it over TCP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["BrokerProcess", "running_broker"]

START_TIMEOUT_S = 30.0


class BrokerProcess:
    def __init__(self, data: Path | str, *extra_args: str, port: int = 0) -> None:
        self.data = str(data)
        self.extra_args = extra_args
        self.port = port
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        command = [
            sys.executable, "-m", "streamer.cli.main", "broker",
            "--data", self.data, "--listen", f"127.0.0.1:{self.port}", *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(ready,), daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("streamer broker did not start:\n" + "".join(self.output))
        return self

    def _pump(self, ready: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "listening on" in line and not ready.is_set():
                self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                ready.set()
        ready.set()

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: no chance to flush or answer anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> BrokerProcess:
        """Start again on the same data folder and port."""
        return BrokerProcess(self.data, *self.extra_args, port=self.port).start()


@contextlib.contextmanager
def log_url(transport: str, tmp_path: Path) -> Iterator[str]:
    """The URL workers get for ``transport``: "embedded", a log folder; "kafka", the
    kafka:// address of a ``streamer broker`` subprocess, running for the block."""
    if transport == "embedded":
        yield str(tmp_path / "log")
        return
    with running_broker(tmp_path / "broker-data") as broker:
        yield f"kafka://{broker.bootstrap}"


@contextlib.contextmanager
def running_broker(data: Path | str, *extra_args: str) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(data, *extra_args).start()
    try:
        yield broker
    finally:
        broker.kill()
