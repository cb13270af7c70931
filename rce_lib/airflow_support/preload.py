"""Import what an rce task process needs once, in the Airflow process that forks task processes.

Airflow 3 forks every task process from an executor worker (LocalExecutor workers are forked
from the scheduler, Celery's from its main process) and the child parses the DAG file, which
imports rce_lib: operators, pydantic models, SQLAlchemy tables, the HTTP hook. Profiled under
`rce bench`, those imports were half of each task process's CPU (docs/performance.md). Imported
in the parent, they are inherited by every fork for nothing. `config/airflow_local_settings.py`
calls `preload_for(sys.argv)`; Airflow imports that file in each of its processes at start-up,
and only the long-running ones that fork task or parsing processes preload (a one-shot command
such as `airflow db migrate` would only pay for imports it never uses).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: "off" turns the preload off (each task process then imports what it needs itself)
PRELOAD_ENV = "RCE_PRELOAD"

#: the modules a task process of a wave or reconcile DAG imports (the DAG files' imports and what
#: their operators, triggers and the plugin import at execution)
MODULES: tuple[str, ...] = (
    "rce_lib.dag_factory",
    "rce_lib.reconcile_dag",
    "rce_lib.plugin.status_app",
    "rce_lib.airflow_support.pool_ceilings",
    "rce_lib.triggers.downstream_task",
    "rce_lib.triggers.ledger_slot",
    "rce_lib.triggers.maintenance_window",
    "rce_lib.triggers.phase",
    "rce_lib.triggers.service_slot",
    "rce_lib.sensors.canary_gate",
)


#: Airflow commands whose process forks task processes (the scheduler's LocalExecutor workers,
#: Celery's pool), parsing processes (the dag-processor) or trigger runners (the triggerer)
FORKING_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("scheduler",),
    ("celery", "worker"),
    ("dag-processor",),
    ("triggerer",),
)


def command(argv: Sequence[str]) -> tuple[str, ...]:
    """The words of an `airflow ...` command line, options left out."""
    return tuple(a for a in argv[1:] if not a.startswith("-"))


def forks_tasks(argv: Sequence[str]) -> bool:
    """Is `argv` (an `airflow ...` command line) one of FORKING_COMMANDS?"""
    words = command(argv)
    return any(words[: len(cmd)] == cmd for cmd in FORKING_COMMANDS)


def preload_for(argv: Sequence[str]) -> list[str]:
    """preload() in a process that forks task processes; nothing elsewhere."""
    return preload() if forks_tasks(argv) else []


def preload(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Import `modules` and build the plugin's app; returns the modules that failed. Never
    raises: a module that cannot be imported here fails in the task that needs it, with its
    own error."""
    if os.environ.get(PRELOAD_ENV, "on").strip().lower() == "off":
        return []
    t0 = time.perf_counter()
    failed: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            log.warning("rce preload: %s not imported: %s", name, err)
            failed.append(name)
    if "rce_lib.plugin.status_app" not in failed:
        try:
            from rce_lib.plugin.status_app import plugin_app

            plugin_app()
        except Exception as err:
            log.warning("rce preload: the status app not built: %s", err)
    log.debug("rce preload: %d modules in %.2f s", len(modules) - len(failed), time.perf_counter() - t0)
    return failed
