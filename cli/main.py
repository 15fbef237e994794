"""The ``streamer`` command line."""

from __future__ import annotations

import click
from rich.console import Console

import streamer

__all__ = ["main"]

console = Console()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(streamer.__version__, prog_name="streamer")
def main() -> None:
    """streamer: stream processing on its own embedded, Kafka-compatible log."""


@main.group()
def bench() -> None:
    """Measure the log and pipelines (figures, never pass/fail)."""


@bench.command("log")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the benchmark's log (default: a temporary folder, removed after).")
@click.option("--batch-bytes", type=int, default=16 * 1024, show_default=True,
              help="Size of each prebuilt record batch.")
@click.option("--total-mib", type=int, default=1024, show_default=True,
              help="MiB appended per run.")
@click.option("--runs", type=int, default=5, show_default=True, help="Runs of each measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_log(
    data_dir: str | None, batch_bytes: int, total_mib: int, runs: int, as_json: bool
) -> None:
    """Append and read prebuilt batches in-process; print MB/s and records/s."""
    from streamer.cli.bench import run_log_benchmark

    run_log_benchmark(
        data_dir=data_dir, batch_bytes=batch_bytes, total_mib=total_mib, runs=runs,
        as_json=as_json, console=console,
    )


if __name__ == "__main__":
    main()
