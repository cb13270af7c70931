"""Fixtures for the telemetry tests.

spans        -> InMemorySpanExporter; tracing is on (an rce TracerProvider with a simple
                processor) for the test, and as it was after.
no_tracing   -> tracing off, as in a process without RCE_OTEL_EXPORTER_OTLP_ENDPOINT.
ledger       -> a fresh SQLite ledger that `get_ledger()` returns.
fleet        -> a fresh simulator, the `sddc_api` connection pointing at it.
task_logs    -> Airflow's own task-log configuration (as the task runner sets it up: JSON
                lines to the supervisor), writing into a buffer; `task_logs()` parses them.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rce_lib.devenv.airflow_local import sddc_api_conn
from rce_lib.telemetry import tracing


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.build_provider(SimpleSpanProcessor(exporter))
    previous = tracing.install(provider)
    yield exporter
    tracing.install(previous)
    provider.shutdown()


@pytest.fixture
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(tracing.ENDPOINT_ENV, raising=False)
    previous = tracing.install(None)
    tracing.reset()
    yield
    tracing.install(previous)


@pytest.fixture
def fleet(sim_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    server = sim_factory(size=3, time_scale=6000)
    monkeypatch.setenv("AIRFLOW_CONN_SDDC_API", sddc_api_conn(server.url, server.token))
    return server


@pytest.fixture
def task_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Configure logging exactly as the task runner does (`airflow.sdk.log.configure_logging(
    json_output=True, output=..., sending_to_supervisor=True)`), then put everything back."""
    from airflow.sdk.log import configure_logging, reset_logging

    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    named = ("airflow", "httpx", "sqlalchemy.engine", "alembic.runtime.plugins")
    saved_levels = {name: logging.getLogger(name).level for name in named}
    saved_structlog = structlog.get_config()
    saved_showwarning = warnings.showwarning

    buffer = io.BytesIO()
    reset_logging()
    configure_logging.cache_clear()
    configure_logging(json_output=True, output=buffer, sending_to_supervisor=True)

    def lines() -> list[dict[str, Any]]:
        for handler in logging.getLogger().handlers:
            handler.flush()
        return [json.loads(line) for line in buffer.getvalue().decode().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        reset_logging()
        configure_logging.cache_clear()
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        warnings.showwarning = saved_showwarning
