"""The preload: Airflow imports config/airflow_local_settings.py, which imports rce_lib before any
task process is forked, and that covers everything parsing the DAG files imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rce_lib.airflow_support.preload import MODULES, forks_tasks
from rce_lib.devenv.airflow_local import LOCAL_SETTINGS, REPO_ROOT, install_local_settings


def _python(code: str, *, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `code` in a fresh interpreter; it prints one JSON line last."""
    full = {**os.environ, **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_preload_module_imports_nothing_of_rce_lib_else() -> None:
    seen = _python(
        "import sys, json; import rce_lib.airflow_support.preload;"
        "print(json.dumps({'mods': sorted(m for m in sys.modules if m.startswith('rce_lib'))}))"
    )
    assert seen["mods"] == ["rce_lib", "rce_lib.airflow_support", "rce_lib.airflow_support.preload"]


@pytest.mark.parametrize(
    ("argv", "forks"),
    [
        (["airflow", "scheduler"], True),
        (["/venv/bin/airflow", "celery", "worker", "--concurrency", "16"], True),
        (["airflow", "dag-processor"], True),
        (["airflow", "triggerer", "--capacity", "1000"], True),
        (["airflow", "api-server"], False),
        (["airflow", "db", "migrate"], False),
        (["airflow", "dags", "test", "rce_wave_canary"], False),
        (["airflow", "celery", "flower"], False),
        (["airflow"], False),
        (["-c"], False),
    ],
)
def test_only_the_processes_that_fork_tasks_preload(argv: list[str], forks: bool) -> None:
    assert forks_tasks(argv) is forks


def _rce_modules_after_airflow_starts(home: Path, command: list[str], **env: str) -> list[str]:
    seen = _python(
        f"import sys, json; sys.argv = {command!r}; import airflow;"
        "print(json.dumps({'mods': sorted(m for m in sys.modules if m.startswith('rce_lib.'))}))",
        env={"AIRFLOW_HOME": str(home), **env},
    )
    return [str(m) for m in seen["mods"]]  # type: ignore[union-attr]


def test_airflow_imports_the_local_settings_and_the_scheduler_preloads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    installed = install_local_settings(home)
    assert installed.read_text() == LOCAL_SETTINGS.read_text()
    mods = _rce_modules_after_airflow_starts(home, ["airflow", "scheduler"])
    assert set(MODULES) <= set(mods)
    assert "rce_lib.operators.base" in mods
    one_shot = _rce_modules_after_airflow_starts(home, ["airflow", "db", "migrate"])
    assert one_shot == ["rce_lib.airflow_support", "rce_lib.airflow_support.preload"]


def test_preload_off_imports_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    install_local_settings(home)
    mods = _rce_modules_after_airflow_starts(home, ["airflow", "scheduler"], RCE_PRELOAD="off")
    assert mods == ["rce_lib.airflow_support", "rce_lib.airflow_support.preload"]


def test_a_module_that_fails_is_reported_not_raised() -> None:
    seen = _python(
        "import json; from rce_lib.airflow_support.preload import preload;"
        "print(json.dumps({'failed': preload(('rce_lib.no_such_module', 'rce_lib.errors'))}))"
    )
    assert seen["failed"] == ["rce_lib.no_such_module"]


def test_the_dag_files_import_nothing_the_preload_did_not(tmp_path: Path) -> None:
    """What a forked task process still imports itself when it parses a DAG file: nothing of
    rce_lib, of pydantic, SQLAlchemy or the HTTP provider (a new module must join MODULES)."""
    seen = _python(
        "import sys, json, runpy;"
        "from rce_lib.airflow_support.preload import preload; assert preload() == [];"
        "before = set(sys.modules);"
        f"runpy.run_path({str(REPO_ROOT / 'dags' / 'rce_waves.py')!r});"
        f"runpy.run_path({str(REPO_ROOT / 'dags' / 'rce_reconcile.py')!r});"
        "runpy.run_path('plugins/rce_plugin.py');"
        "new = sorted(set(sys.modules) - before);"
        "print(json.dumps({'new': new}))",
        env={"RCE_INCLUDE_DIR": str(REPO_ROOT / "include"), "AIRFLOW_HOME": str(tmp_path)},
    )
    heavy = ("rce_lib", "pydantic", "sqlalchemy", "airflow.providers.http", "fastapi", "requests")
    assert [m for m in seen["new"] if isinstance(m, str) and m.startswith(heavy)] == []  # type: ignore[union-attr]
