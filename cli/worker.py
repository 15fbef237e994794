"""``streamer worker MODULE:APP``: import an app and run a worker of it."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from streamer.app import App, check_processing_guarantee
from streamer.errors import StreamerError
from streamer.worker import run_worker

from .broker import configure_logging

__all__ = ["load_app", "start_worker"]


def load_app(spec: str) -> App:
    """``package.module:attribute`` → the App object (attribute defaults to ``app``)."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: apps next to the user
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.ClickException(f"cannot import {module_name!r}: {error}") from None
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise click.ClickException(
            f"{spec}: {attribute or 'app'!r} in {module_name} is not a streamer.App"
        )
    return app


def start_worker(
    spec: str, broker: str | None, data: str | None, loglevel: str, *,
    metrics_port: int | None = None,
    state_dir: str | None = None,
    processing_guarantee: str | None = None,
) -> None:
    configure_logging(loglevel)
    app = load_app(spec)
    if state_dir is not None:
        app.state_dir = state_dir
    if processing_guarantee is not None:
        try:
            app.processing_guarantee = check_processing_guarantee(processing_guarantee)
        except StreamerError as error:
            raise click.ClickException(str(error)) from None
    url = broker or data or app.broker
    metrics = None
    try:
        if metrics_port is not None:
            metrics = _serve_metrics(app, metrics_port)
        run_worker(app, broker=url)
    except StreamerError as error:  # AgentError included: the worker has logged it
        raise click.ClickException(str(error)) from None
    finally:
        if metrics is not None:
            metrics.shutdown()


def _serve_metrics(app: App, port: int) -> Any:
    from streamer.metrics import serve_metrics

    try:
        server = serve_metrics(app, port)
    except OSError as error:
        raise click.ClickException(f"cannot serve metrics on port {port}: {error}") from None
    logging.getLogger("streamer.worker").info(
        "Prometheus metrics at http://%s:%d/metrics", *server.server_address[:2])
    return server
