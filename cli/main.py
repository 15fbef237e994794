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


@bench.command("broker")
@click.option("--brokers", default="streamer,tansu", show_default=True,
              help="Brokers to measure, comma-separated: streamer, tansu.")
@click.option("--messages", default="1000000,200000", show_default=True,
              help="Messages per run, one count per size (or one count for all sizes).")
@click.option("--sizes", default="100,1024", show_default=True,
              help="Payload bytes of each message, comma-separated.")
@click.option("--partitions", type=int, default=1, show_default=True,
              help="Partitions of each run's topic.")
@click.option("--runs", type=int, default=3, show_default=True, help="Runs of each workload.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for streamer broker's data (default: a temporary folder on disk).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_broker(
    brokers: str, messages: str, sizes: str, partitions: int, runs: int,
    data_dir: str | None, as_json: bool,
) -> None:
    """confluent-kafka producer and consumer against streamer broker and tansu; msg/s, MB/s."""
    from streamer.cli.bench_broker import parse_workloads, run_broker_benchmark

    report = run_broker_benchmark(
        brokers=[b.strip() for b in brokers.split(",") if b.strip()],
        workloads=parse_workloads(messages, sizes), partitions=partitions, runs=runs,
        data_dir=data_dir, as_json=as_json, console=console,
    )
    if report["failures"]:
        raise SystemExit(1)


@main.command("broker")
@click.option("--data", default="./streamer-data", show_default=True,
              help="Folder of the log (or memory:// for a log that is not durable).")
@click.option("--listen", default="127.0.0.1:9092", show_default=True,
              help="HOST:PORT to listen on; port 0 picks a free port.")
@click.option("--advertise", default=None,
              help="HOST:PORT that Metadata names (default: the address each client reached).")
@click.option("--default-partitions", type=click.IntRange(1, 10_000), default=1,
              show_default=True, help="Partitions of auto-created topics.")
@click.option("--auto-create-topics/--no-auto-create-topics", default=True, show_default=True,
              help="Create a topic when a client names one that does not exist.")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def broker(
    data: str, listen: str, advertise: str | None, default_partitions: int,
    auto_create_topics: bool, loglevel: str,
) -> None:
    """Serve the log over the Kafka protocol until SIGTERM or Ctrl-C."""
    from streamer.cli.broker import parse_address, run_broker

    for address in (listen, advertise):
        try:
            if address:
                parse_address(address)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
    run_broker(data, listen, advertise=advertise, default_partitions=default_partitions,
               auto_create_topics=auto_create_topics, loglevel=loglevel)


if __name__ == "__main__":
    main()
