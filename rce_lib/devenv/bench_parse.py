"""`rce bench --parse-only`: how long each DAG file takes to parse, shown by `airflow dags report`.

Issue 6 asks for at most 0.3 s per DAG file with a 10,000-SDDC simulated fleet and no
inventory or network at parse time. So this starts the simulator with that fleet, points
the SDDC API connection at it, writes a plan that covers the fleet (a canary wave, then
waves of 1,000 SDDCs, each `after:` the one before: 1 + fleet/1000 DAGs in
dags/rce_waves.py), and in a fresh AIRFLOW_HOME measures every DAG file three ways:

* `report`: `airflow dags report` with the file alone in its DAGs folder, in a fresh
  process (rce_lib is imported cold, as in every parse by the dag-processor);
* `processor`: as the dag-processor parses it: a process that has imported what the
  dag-processor manager imports, pre-imported the file's `airflow` imports and frozen the
  GC (the manager does both before it forks a parser), then loads the file into a DagBag;
* `folder`: `airflow dags report` of the whole dags/ folder in one process (what the
  command shows as is; files after the first find rce_lib already imported).

`report` and `processor` run twice: with bytecode cached (PYTHONPYCACHEPREFIX, as an
installed package has it) and with none (PYTHONDONTWRITEBYTECODE=1 and an empty cache:
every module compiled from source, which is what a checkout whose environment sets
PYTHONDONTWRITEBYTECODE and whose venv was installed without `--compile-bytecode` pays).
Each `repeats` times; the table shows medians and the fastest sample (on a shared machine the
fastest is the best estimate of the code's own cost), the JSON every sample. The simulator's
request counter before and after proves that parsing sent no request to the SDDC API.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from rce_lib.devenv.airflow_local import REPO_ROOT, LocalAirflow, venv_bin
from rce_lib.devenv.bench_model import SOURCE_VERSION, TARGET_VERSION

PARSE_LIMIT_S = 0.3
WAVE_SIZE = 1000
TOKEN = "bench-parse-token"
#: Shared by every bench run: bytecode of Airflow and rce_lib, written once (var/ is not in git).
PYCACHE = REPO_ROOT / "var" / "bench" / "pycache"
_MARK = "RCE-PARSE "

Method = Literal["report", "processor"]
Bytecode = Literal["pyc", "no-pyc"]

# What the dag-processor does around one parse (airflow/dag_processing/manager.py, processor.py).
_PROCESSOR_SNIPPET = f"""
import gc, json, pathlib, sys
import airflow.dag_processing.manager  # the manager has imported this before it forks a parser
from airflow.dag_processing.dagbag import BundleDagBag
gc.freeze()  # DagFileProcessorManager.before_run
path = pathlib.Path(sys.argv[1])
try:
    import structlog
    from airflow.dag_processing.processor import _pre_import_airflow_modules
    _pre_import_airflow_modules(str(path), structlog.get_logger())  # DagFileProcessorProcess.start
except ImportError:
    pass
bag = BundleDagBag(
    dag_folder=str(path), bundle_path=path.parent, bundle_name="bench-parse", load_op_links=False
)
seconds = sum(s.duration.total_seconds() for s in bag.dagbag_stats)
tasks = sum(len(d.tasks) for d in bag.dags.values())
row = {{"file": path.name, "seconds": seconds, "dags": len(bag.dags), "tasks": tasks}}
print({_MARK!r} + json.dumps(row))
"""


def bytecode_env(env: dict[str, str], bytecode: Bytecode, empty: Path) -> dict[str, str]:
    """`env` with bytecode cached in PYCACHE, or with none at all (an empty prefix, no writes)."""
    if bytecode == "pyc":
        PYCACHE.mkdir(parents=True, exist_ok=True)
        return {**env, "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    empty.mkdir(parents=True, exist_ok=True)
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}


class FileParse(BaseModel):
    """One DAG file's parse times in seconds, every sample, by method and bytecode."""

    model_config = ConfigDict(frozen=True)

    file: str
    dags: int
    tasks: int
    samples: dict[str, list[float]] = Field(description="'<method>/<bytecode>' -> seconds")

    def median(self, key: str) -> float:
        values = self.samples.get(key) or []
        return statistics.median(values) if values else float("nan")

    def worst(self, key: str) -> float:
        return max(self.samples.get(key) or [float("nan")])

    def best(self, key: str) -> float:
        return min(self.samples.get(key) or [float("nan")])


def parse_plan(fleet: int, wave_size: int = WAVE_SIZE) -> dict[str, Any]:
    """A rollout plan that covers `fleet` SDDCs: canary (10), then waves of `wave_size`."""
    waves: list[dict[str, Any]] = [
        {"name": "canary", "selector": {}, "size": min(10, fleet), "canary_size": 2, "max_parallel": 2}
    ]
    left, previous, index = fleet - waves[0]["size"], "canary", 0
    while left > 0:
        index += 1
        size = min(wave_size, left)
        name = f"w{index:02d}"
        waves.append(
            {"name": name, "schedule": f"after:{previous}", "selector": {}, "size": size, "max_parallel": 100}
        )
        left, previous = left - size, name
    return {
        "rollout": f"parse-{fleet}",
        "release": TARGET_VERSION,
        "defaults": {
            "max_parallel": 10,
            "max_fail_percentage": 5,
            "bake_seconds": 300,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
            "schedule": None,
        },
        "waves": waves,
    }


def _run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _report(env: dict[str, str], dags_folder: Path) -> list[dict[str, Any]]:
    """One `airflow dags report -o json` in a fresh process: (file, seconds, DAGs, tasks) rows."""
    out = _run(
        [str(venv_bin() / "airflow"), "dags", "report", "-o", "json"],
        {**env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder)},
    )
    line = next((ln for ln in out.splitlines() if ln.startswith("[")), None)
    if line is None:
        raise RuntimeError(f"airflow dags report printed no JSON:\n{out[-2000:]}")
    return [
        {
            "file": row["file"],
            "seconds": _seconds(row["duration"]),
            "dags": int(row["dag_num"]),
            "tasks": int(row["task_num"]),
        }
        for row in json.loads(line)
    ]


def _processor(env: dict[str, str], path: Path) -> dict[str, Any]:
    out = _run([sys.executable, "-c", _PROCESSOR_SNIPPET, str(path)], env)
    line = next((ln for ln in out.splitlines() if ln.startswith(_MARK)), None)
    if line is None:
        raise RuntimeError(f"the dag-processor-like parse printed nothing:\n{out[-2000:]}")
    return dict(json.loads(line.removeprefix(_MARK)))


def _seconds(duration: str) -> float:
    """`0:00:00.172537` -> 0.172537."""
    h, m, s = duration.split(":")
    return timedelta(hours=int(h), minutes=int(m), seconds=float(s)).total_seconds()


def measure(home: Path, *, sim_url: str, plan_path: Path, repeats: int) -> list[FileParse]:
    """Parse every file of dags/ `repeats` times by every method (see the module docstring)."""
    local = LocalAirflow(
        home=home, sim_url=sim_url, sim_token=TOKEN, extra_env={"RCE_ROLLOUT_PLAN": str(plan_path)}
    )
    base = local.env()
    env = {b: bytecode_env(base, b, home / "empty-pycache") for b in ("pyc", "no-pyc")}
    _run([str(venv_bin() / "airflow"), "db", "migrate"], env["pyc"])
    files = sorted((REPO_ROOT / "dags").glob("*.py"))
    for f in files:
        folder = home / "parse" / f.stem
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, folder / f.name)
    _report(env["pyc"], REPO_ROOT / "dags")  # warm-up: the bytecode cache holds everything parsing needs
    samples: dict[str, dict[str, list[float]]] = {f.name: {} for f in files}
    shape: dict[str, tuple[int, int]] = {}

    def add(file: str, key: str, row: dict[str, Any]) -> None:
        samples[file].setdefault(key, []).append(float(row["seconds"]))
        shape[file] = (int(row["dags"]), int(row["tasks"]))

    for _ in range(repeats):
        for f in files:
            copy = home / "parse" / f.stem / f.name
            for bytecode in ("pyc", "no-pyc"):
                for row in _report(env[bytecode], copy.parent):
                    add(row["file"], f"report/{bytecode}", row)
                add(f.name, f"processor/{bytecode}", _processor(env[bytecode], copy))
        for row in _report(env["pyc"], REPO_ROOT / "dags"):
            add(row["file"], "folder/pyc", row)
    return [
        FileParse(
            file=f.name,
            dags=shape.get(f.name, (0, 0))[0],
            tasks=shape.get(f.name, (0, 0))[1],
            samples=samples[f.name],
        )
        for f in files
    ]


COLUMNS = (
    ("report/pyc", "report"),
    ("processor/pyc", "processor"),
    ("folder/pyc", "folder"),
    ("report/no-pyc", "report"),
    ("processor/no-pyc", "processor"),
)


def render(rows: list[FileParse], *, fleet: int, dag_count: int, requests: int, load: str) -> str:
    head = f"{'':<18} {'':>5} {'':>6}   {'bytecode cached':^32}   {'no bytecode':^22}"
    names = " ".join(f"{label:>10}" for _, label in COLUMNS)
    lines = [
        f"DAG parse time (s, median), simulated fleet {fleet} SDDCs, plan of {dag_count} waves; "
        f"limit {PARSE_LIMIT_S:g} s per file",
        head,
        f"{'file':<18} {'DAGs':>5} {'tasks':>6}  {names}  verdict",
    ]
    for r in rows:
        cells = " ".join(f"{r.median(key):>10.3f}" for key, _ in COLUMNS)
        mins = " ".join(f"{r.best(key):>10.3f}" for key, _ in COLUMNS)
        # on the medians: a shared machine's load spikes show in the worst samples, not the code
        slowest = max(r.median("report/pyc"), r.median("processor/pyc"))
        verdict = "ok" if slowest <= PARSE_LIMIT_S else f"OVER {PARSE_LIMIT_S:g} s"
        lines.append(f"{r.file:<18} {r.dags:>5} {r.tasks:>6}  {cells}  {verdict}")
        lines.append(f"{'  (fastest)':<18} {'':>5} {'':>6}  {mins}")
    lines.append(
        "report: `airflow dags report`, the file alone, fresh process; processor: as the dag-processor "
        "parses it; folder: the whole dags/ in one report"
    )
    lines.append(f"SDDC API requests during parsing: {requests}  (load average: {load})")
    return "\n".join(lines)


def run_parse_only(*, home: Path, fleet: int, repeats: int, json_out: Path | None) -> int:
    """The whole `--parse-only` run in a fresh `home`."""
    from rce_lib.cli import CommandError
    from rce_lib.devenv.demo import start_simulator

    plan = parse_plan(fleet)
    plan_path = home / "rollout-parse.yaml"
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    print(
        f"rce bench --parse-only: fleet {fleet}, {len(plan['waves'])} waves, AIRFLOW_HOME={home}", flush=True
    )
    try:
        sim, sim_url = start_simulator(home, size=fleet, time_scale=60.0, token=TOKEN)
    except RuntimeError as err:
        last = str(err).strip().splitlines()[-1:] or ["no output"]
        raise CommandError(
            f"the simulator did not start (see {home / 'logs' / 'simulator.log'}): {last[0]}"
        ) from None
    try:
        import requests

        def api_requests() -> int:
            """Requests the simulator saw on the SDDC API (/api/...), not on its own /sim routes."""
            resp = requests.get(
                f"{sim_url}/sim/counters", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=(3, 30)
            )
            resp.raise_for_status()
            rows = resp.json().get("requests", [])
            return sum(int(r["count"]) for r in rows if str(r.get("route", "")).startswith("/api/"))

        before = api_requests()
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        t0 = time.monotonic()
        rows = measure(home, sim_url=sim_url, plan_path=plan_path, repeats=repeats)
        requests_during = api_requests() - before
        elapsed = time.monotonic() - t0
    finally:
        sim.stop()
    load = f"{load_before} at the start, " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " at the end"
    broken = {
        r.file: "no DAG: an import error (`airflow dags list-import-errors`)" for r in rows if r.dags == 0
    }
    print()
    print(render(rows, fleet=fleet, dag_count=len(plan["waves"]), requests=requests_during, load=load))
    print(f"({repeats} repeat(s), {elapsed:.0f} s; plan: {SOURCE_VERSION} -> {TARGET_VERSION})")
    for name, why in broken.items():
        print(f"  {name}: {why}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "fleet": fleet,
            "waves": len(plan["waves"]),
            "limit_s": PARSE_LIMIT_S,
            "sddc_api_requests_during_parse": requests_during,
            "load_average": load,
            "files": [{**r.model_dump(), "median_s": {k: r.median(k) for k in r.samples}} for r in rows],
            "broken": broken,
        }
        json_out.write_text(json.dumps(body, indent=2) + "\n")
        print(f"wrote {json_out}")
    # Like the bench, a verdict on speed is printed, not an exit status: 1 only when parsing broke
    # (a file gave no DAG) or touched the SDDC API.
    return 0 if not broken and requests_during == 0 else 1
