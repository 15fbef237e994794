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


# -- client commands: topics, produce, consume, against any Kafka-compatible broker ----------


def _bootstrap(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from streamer.cli.topics import parse_bootstrap

    try:
        addresses: list[str] = parse_bootstrap(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return addresses


def _client_options(command: click.decorators.FC) -> click.decorators.FC:
    """``--broker`` and ``--request-timeout``, which every client command takes."""
    command = click.option(
        "--request-timeout", "timeout_s", type=click.FloatRange(0, min_open=True),
        default=10.0, show_default=True, metavar="SECONDS",
        help="How long to wait to connect to the broker and for each of its answers.",
    )(command)
    return click.option(
        "--broker", "-b", "bootstrap", default="127.0.0.1:9092", show_default=True,
        envvar="STREAMER_BROKER", show_envvar=True, callback=_bootstrap,
        metavar="HOST:PORT[,...]",
        help="Kafka-compatible broker(s) to bootstrap from (kafka://HOST:PORT also works).",
    )(command)


@main.group()
def topics() -> None:
    """List, create, describe, alter and delete topics."""


@topics.command("list")
@_client_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def topics_list(bootstrap: list[str], timeout_s: float, as_json: bool) -> None:
    """Topic names and partition counts."""
    from streamer.cli.topics import run_topics_list

    run_topics_list(bootstrap, timeout_s, as_json)


@topics.command("create")
@click.argument("name")
@_client_options
@click.option("--partitions", "-p", type=click.IntRange(1), default=1, show_default=True)
@click.option("--replication-factor", "-r", type=click.IntRange(1), default=1,
              show_default=True)
@click.option("--config", "-c", "configs", multiple=True, metavar="NAME=VALUE",
              help="A topic config, e.g. retention.ms=86400000 (repeatable).")
@click.option("--if-not-exists", is_flag=True, help="Succeed if the topic already exists.")
def topics_create(
    name: str, bootstrap: list[str], timeout_s: float, partitions: int,
    replication_factor: int, configs: tuple[str, ...], if_not_exists: bool,
) -> None:
    """Create topic NAME."""
    from streamer.cli.topics import parse_config_pairs, run_topics_create

    run_topics_create(
        bootstrap, timeout_s, name, partitions=partitions,
        replication_factor=replication_factor, configs=parse_config_pairs(configs),
        if_not_exists=if_not_exists,
    )


@topics.command("describe")
@click.argument("name")
@_client_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def topics_describe(name: str, bootstrap: list[str], timeout_s: float, as_json: bool) -> None:
    """Partitions of topic NAME with their log start and end offsets, and its configs."""
    from streamer.cli.topics import run_topics_describe

    run_topics_describe(bootstrap, timeout_s, name, as_json)


@topics.command("alter")
@click.argument("name")
@_client_options
@click.option("--config", "-c", "configs", multiple=True, metavar="NAME=VALUE",
              help="Set a topic config (repeatable); other overrides are kept.")
@click.option("--delete-config", "delete_configs", multiple=True, metavar="NAME",
              help="Remove an override, back to the default (repeatable).")
@click.option("--partitions", "-p", type=click.IntRange(1), default=None,
              help="Grow the topic to this many partitions.")
def topics_alter(
    name: str, bootstrap: list[str], timeout_s: float, configs: tuple[str, ...],
    delete_configs: tuple[str, ...], partitions: int | None,
) -> None:
    """Change the configs or the partition count of topic NAME."""
    from streamer.cli.topics import parse_config_pairs, run_topics_alter

    run_topics_alter(
        bootstrap, timeout_s, name, set_configs=parse_config_pairs(configs),
        delete_configs=delete_configs, partitions=partitions,
    )


@topics.command("delete")
@click.argument("names", nargs=-1, required=True)
@_client_options
@click.option("--if-exists", is_flag=True, help="Skip names that are not topics.")
def topics_delete(
    names: tuple[str, ...], bootstrap: list[str], timeout_s: float, if_exists: bool
) -> None:
    """Delete the topics NAMES (none at all if one of them does not exist)."""
    from streamer.cli.topics import run_topics_delete

    run_topics_delete(bootstrap, timeout_s, names, if_exists)


@main.command("produce")
@click.argument("topic")
@_client_options
@click.option("--key-separator", "-K", default=None, metavar="SEP",
              help="Split each line at the first SEP into key and value (\\t is a tab).")
@click.option("--partition", "-p", type=click.IntRange(0), default=None,
              help="Send every message to this partition (default: by key, else spread).")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE",
              help="A header on every message (repeatable).")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all", show_default=True,
              help="Acknowledgement to wait for: none, the leader's, all replicas'.")
def produce(
    topic: str, bootstrap: list[str], timeout_s: float, key_separator: str | None,
    partition: int | None, headers: tuple[str, ...], acks: str,
) -> None:
    """Send each line of stdin to TOPIC as one message; a summary goes to stderr.

    Exits 0 only if every message was acknowledged (with --acks 0: sent). With
    --key-separator, a line without the separator stops the command there.

    \b
    printf 'user-1:signed up\\n' | streamer produce events -K : -H source=cli
    """
    from streamer.cli.produce import run_produce

    run_produce(
        bootstrap, timeout_s, topic, key_separator=key_separator, partition=partition,
        headers=headers, acks=acks,
    )


@main.command("consume")
@click.argument("topic")
@_client_options
@click.option("--group", "-G", default=None,
              help="Consumer group: start at its committed offsets, commit what is printed.")
@click.option("--partition", "-p", "partitions", type=click.IntRange(0), multiple=True,
              help="Read only this partition (repeatable; default: all, or the group's share).")
@click.option("--offset", "-o", default=None, metavar="beginning|end|N|-N",
              help="Start here in each partition; -N is N messages before the end.")
@click.option("--from-beginning", is_flag=True,
              help="Start at the beginning (with --group: where it has no committed offset).")
@click.option("--count", "-c", type=click.IntRange(1), default=None,
              help="Exit after this many messages.")
@click.option("--timeout", "idle_timeout_s", type=click.FloatRange(0, min_open=True),
              default=None, metavar="SECONDS",
              help="Exit after this long without a message (exit 1 if --count is unmet).")
@click.option("--format", "-f", "template", default=None, metavar="TEMPLATE",
              help="Line per message, e.g. '{partition}:{offset} {key}={value}'; fields: "
                   "topic partition offset key value timestamp headers.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per message; non-UTF-8 bytes as {\"base64\": ...}.")
def consume(
    topic: str, bootstrap: list[str], timeout_s: float, group: str | None,
    partitions: tuple[int, ...], offset: str | None, from_beginning: bool, count: int | None,
    idle_timeout_s: float | None, template: str | None, as_json: bool,
) -> None:
    """Print the messages of TOPIC, one per line (the value, unless --format or --json).

    Starts at the group's committed offsets with --group, else at the end: new messages
    only (--from-beginning, --offset to choose). Runs until --count, --timeout, Ctrl-C or
    SIGTERM; with --group it commits the offsets of what it printed before it exits.

    --json prints topic, partition, offset, timestamp (ms), timestamp_type, key, value and
    headers (a list of {"key", "value"}); a key or value that is not UTF-8 is
    {"base64": "..."}.

    \b
    streamer consume events --from-beginning --count 10 --json
    streamer consume events -G billing -f '{partition}:{offset} {key}={value}'
    streamer consume events -p 0 -o -5 --timeout 2
    """
    from streamer.cli.consume import run_consume

    run_consume(
        bootstrap, timeout_s, topic, group=group, partitions=partitions, offset=offset,
        from_beginning=from_beginning, count=count, idle_timeout_s=idle_timeout_s,
        template=template, as_json=as_json,
    )


@main.command("worker")
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--broker", default=None,
              help="memory://, a folder, file://PATH or kafka://HOST:PORT (default: the app's).")
@click.option("--data", default=None, help="Folder of the embedded log (same as --broker DIR).")
@click.option("--loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics on this port (needs streamer[metrics]).")
@click.option("--state-dir", default=None, metavar="DIR",
              help="Where table stores live (default: <log folder>/state/<app>, or "
                   "./streamer-state/<app> on kafka://).")
@click.option("--processing-guarantee", default=None,
              type=click.Choice(["at_least_once", "exactly_once"]),
              help="Override the app's processing_guarantee (exactly_once: each checkpoint "
                   "is a transaction).")
def worker(
    app_spec: str, broker: str | None, data: str | None, loglevel: str,
    metrics_port: int | None, state_dir: str | None, processing_guarantee: str | None,
) -> None:
    """Run a worker of an app: its agents, timers, tasks and tables, until SIGTERM or
    Ctrl-C."""
    from streamer.cli.worker import start_worker

    start_worker(app_spec, broker, data, loglevel, metrics_port=metrics_port,
                 state_dir=state_dir, processing_guarantee=processing_guarantee)


@main.command("top")
@click.option("--broker", "-b", default=None, envvar="STREAMER_BROKER", show_envvar=True,
              metavar="HOST:PORT|FOLDER",
              help="The log: a broker address, or an embedded log's folder (its worker.json "
                   "says where it is served). Default: ./streamer-data when a worker serves "
                   "it, else 127.0.0.1:9092.")
@click.option("--app", default=None, metavar="ID",
              help="The app to show (default: the first with live workers).")
@click.option("--refresh", "refresh_s", type=click.FloatRange(0.2), default=2.0,
              show_default=True, metavar="SECONDS", help="Seconds between frames.")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the workers' snapshots (or the log overview) as JSON and exit.")
@click.option("--request-timeout", "timeout_s", type=click.FloatRange(0, min_open=True),
              default=10.0, show_default=True, metavar="SECONDS",
              help="How long to wait to connect to the broker and for each of its answers.")
def top(
    broker: str | None, app: str | None, refresh_s: float, once: bool, as_json: bool,
    timeout_s: float,
) -> None:
    """A terminal monitor of a running job: workers, partitions and lag, agents, tables,
    recent errors; with no worker running, what the log holds (groups and their lag).

    \b
    Keys: q quit, p pause, s sort, l only lagging, / filter, f focus, ? help.
    streamer top --broker ./streamer-data
    streamer top --once --json | jq '.workers[].partitions[] | {topic, partition, lag}'
    """
    from streamer.cli.top import run_top

    run_top(broker, app, refresh_s, once, as_json, timeout_s)


@bench.command("pipeline")
@click.option("--events", type=click.IntRange(2), default=500_000, show_default=True,
              help="Input events per run (JSON page views, 1,000 keys, 4 partitions).")
@click.option("--faust-events", type=click.IntRange(2), default=50_000, show_default=True,
              help="Input events per run for faust-streaming, which is slow (at most --events).")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each pipeline; the median is reported.")
@click.option("--only", default=None, metavar="NAME,...",
              help="Pipelines to run: streamer-embedded, streamer-kafka, quixstreams, faust.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the runs' logs (default: a temporary folder on disk).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False), default=None,
              help="Run each pipeline under cProfile; write <pipeline>-run<N>.prof there.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_pipeline(
    events: int, faust_events: int, runs: int, only: str | None, data_dir: str | None,
    profile_dir: str | None, as_json: bool,
) -> None:
    """Decode, filter, map, send: streamer (embedded and over streamer broker), quixstreams
    and faust-streaming on the same events; events/s and ratios to quixstreams."""
    from streamer.cli.bench_pipeline import parse_pipelines, run_pipeline_benchmark

    report = run_pipeline_benchmark(
        pipelines=parse_pipelines(only), events=events, faust_events=faust_events, runs=runs,
        data_dir=data_dir, profile_dir=profile_dir, as_json=as_json, console=console,
    )
    if report["failures"]:
        raise SystemExit(1)


from streamer.cli.tables import tables  # noqa: E402  # click only: no client imported yet

main.add_command(tables)


@bench.command("stateful")
@click.option("--events", type=click.IntRange(2), default=500_000, show_default=True,
              help="Input events per run of count and window (JSON page views, 4 partitions).")
@click.option("--keys", type=click.IntRange(1), default=1_000, show_default=True,
              help="Distinct keys (users) of the input events.")
@click.option("--recovery-keys", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Keys of the table that the recovery run restores from its changelog.")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each workload and framework; the median is reported.")
@click.option("--only", default=None, metavar="NAME,...",
              help="Workloads (count, count-eos, window, recovery) and/or frameworks "
                   "(streamer-embedded, streamer-kafka, quixstreams) to run; default: all.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the runs' logs (default: a temporary folder on disk).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False), default=None,
              help="Run each app under cProfile; write <workload>-<framework>-run<N>.prof there.")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also write the figures as JSON to PATH ('-': print JSON instead of the "
                   "table).")
def bench_stateful(
    events: int, keys: int, recovery_keys: int, runs: int, only: str | None,
    data_dir: str | None, profile_dir: str | None, json_path: str | None,
) -> None:
    """A keyed count in a table, a 10 s tumbling-window count and a table's recovery from
    its changelog: streamer (embedded and over streamer broker) and quixstreams on the same
    events; events/s, keys/s and ratios to quixstreams."""
    from streamer.cli.bench_stateful import parse_only, run_stateful_benchmark

    workloads, frameworks = parse_only(only)
    report = run_stateful_benchmark(
        workloads=workloads, frameworks=frameworks, events=events, keys=keys,
        recovery_keys=recovery_keys, runs=runs, data_dir=data_dir, profile_dir=profile_dir,
        json_path=json_path, console=console,
    )
    if report["failures"]:
        raise SystemExit(1)


@bench.command("joins")
@click.option("--events", type=click.IntRange(2), default=500_000, show_default=True,
              help="Orders enriched from the table; impressions plus clicks joined.")
@click.option("--customers", type=click.IntRange(1), default=100_000, show_default=True,
              help="Keys of the customers table the orders are enriched from.")
@click.option("--keys", type=click.IntRange(1), default=10_000, show_default=True,
              help="Distinct ads (keys) of the impressions and clicks.")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True,
              help="Runs of each workload and framework; the median is reported.")
@click.option("--only", default=None, metavar="NAME,...",
              help="Workloads (stream-table, stream-stream) and/or frameworks "
                   "(streamer-embedded, streamer-kafka, quixstreams) to run; default: all.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the runs' logs (default: a temporary folder on disk).")
@click.option("--profile", "profile_dir", type=click.Path(file_okay=False), default=None,
              help="Run each join phase under cProfile; write "
                   "<workload>-<framework>-run<N>.prof there.")
@click.option("--json", "json_path", default=None, metavar="PATH",
              help="Also write the figures as JSON to PATH ('-': print JSON instead of the "
                   "table).")
def bench_joins(
    events: int, customers: int, keys: int, runs: int, only: str | None,
    data_dir: str | None, profile_dir: str | None, json_path: str | None,
) -> None:
    """A stream enriched from a table and a windowed stream-stream join: streamer (embedded
    and over streamer broker) and quixstreams on the same events; events/s and ratios."""
    from streamer.cli.bench_joins import parse_only, run_joins_benchmark

    workloads, frameworks = parse_only(only)
    report = run_joins_benchmark(
        workloads=workloads, frameworks=frameworks, events=events, customers=customers,
        keys=keys, runs=runs, data_dir=data_dir, profile_dir=profile_dir,
        json_path=json_path, console=console,
    )
    if report["failures"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
