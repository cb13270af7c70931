"""A read-only view of the ledger on Airflow's api-server: where every SDDC stands.

Served under /rce by the plugin in plugins/rce_plugin.py. Every route requires an
Airflow login (a bearer token or the UI's session cookie), like Airflow's own API.
"""

from __future__ import annotations

import html
import os
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import CollectorRegistry

from rce_lib.airflow_support.ledger_conn import get_ledger

COLUMNS = ("wave", "SDDC", "grid", "phase", "status", "from", "to", "last error", "updated")


def _require_login() -> Any:
    from airflow.api_fastapi.core_api.security import get_user

    return Depends(get_user)


@lru_cache(maxsize=1)
def _registry() -> CollectorRegistry:
    """One collector per api-server process: it keeps its cursor on the event log between scrapes."""
    from rce_lib.metrics.exporter import PHASE_MAX_ENV, build_registry, phase_max_seconds

    return build_registry(get_ledger(), phase_max=phase_max_seconds(os.environ.get(PHASE_MAX_ENV)))


@lru_cache(maxsize=1)
def plugin_app() -> FastAPI:
    """The app the plugin mounts, built once per process: every Airflow process loads plugins,
    and a task process forked after the preload (rce_lib.airflow_support.preload) inherits it."""
    return create_app()


def create_app() -> FastAPI:
    app = FastAPI(title="rce status", dependencies=[_require_login()])

    @app.get("/progress")
    def progress(
        rollout: Annotated[str | None, Query(max_length=128)] = None,
        wave: Annotated[str | None, Query(max_length=128)] = None,
        run_id: Annotated[str | None, Query(max_length=250)] = None,
    ) -> list[dict[str, Any]]:
        """Every SDDC's progress record, optionally for one rollout, wave or run."""
        rows = get_ledger().list_progress(rollout=rollout, wave=wave, run_id=run_id)
        return [row.model_dump(mode="json") for row in rows]

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """The rce metrics in Prometheus text format (the same numbers `rce exporter` serves)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def page(wave: Annotated[str | None, Query(max_length=128)] = None) -> str:
        ledger = get_ledger()
        rows = ledger.list_progress(wave=wave)
        slots = _grid_slots(ledger, {(r.rollout, r.wave) for r in rows})
        cells = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    r.wave,
                    r.sddc_id,
                    slots.get((r.rollout, r.wave, r.run_id, r.sddc_id), ""),
                    r.phase.value,
                    r.status.value,
                    r.source_version,
                    r.target_version,
                    f"[{r.last_error.code}] {r.last_error.message}" if r.last_error else "",
                    r.updated_at.isoformat(timespec="seconds"),
                )
            )
            + "</tr>"
            for r in rows
        )
        head = "".join(f"<th>{h}</th>" for h in COLUMNS)
        return (
            "<html><head><title>rce status</title></head><body><h2>rce: where every SDDC stands</h2>"
            f"<table border=1 cellpadding=4><tr>{head}</tr>{cells}</table></body></html>"
        )

    return app


def _grid_slots(ledger: Any, waves: set[tuple[str, str]]) -> dict[tuple[str, str, str, str], str]:
    """(rollout, wave, run, SDDC) -> `<group>[<map index>]` in the run's grid, from each wave's
    latest cohort (rce_lib.status.snapshot.grid_slots)."""
    from rce_lib.status.snapshot import grid_slots

    out: dict[tuple[str, str, str, str], str] = {}
    for rollout, wave in waves:
        cohorts = ledger.events(rollout=rollout, wave=wave, kinds=["cohort_resolved"], limit=10_000)
        if cohorts:
            latest = cohorts[-1]
            for sddc_id, slot in grid_slots(latest).items():
                out[rollout, wave, latest.run_id, sddc_id] = slot
    return out
