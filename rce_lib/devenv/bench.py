"""`rce bench`: one wave of N SDDCs on the simulator under `airflow standalone`.

Prints one table: makespan against an honest lower bound computed from the
simulator's capacities and durations, service utilisation, API calls per SDDC,
throttling, peak concurrency against pools and capacities, correctness counters
(duplicate starts, Retry-After violations) and orchestration CPU per SDDC.
`--json OUT` writes the same numbers. Every process started is stopped at the
end, also on error or Ctrl-C. See bench/README.md for what each number means.

The fixed settings, the fleet's shape and the lower-bound arithmetic live in
`bench_model` (pure, unit-tested); the batch-serial baseline in `bench_baseline`; the
DAG parse-time measurement (`--parse-only`) in `bench_parse`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from rce_lib.devenv.airflow_distributed import PG_SERVER, create_database, drop_database
from rce_lib.devenv.airflow_local import REPO_ROOT, LocalAirflow, tool_home
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.bench_model import (
    NSX_CHAIN,
    SERVICES,
    SOURCE_VERSION,
    STANDARD_CAPACITY,
    STANDARD_METADATA_DB,
    STANDARD_SEED,
    STANDARD_TIME_SCALE,
    TARGET_VERSION,
    VCENTER_CHAIN,
    BenchSettings,
    Bound,
    fleet_size_for,
    host_chain_s,
    lower_bound,
    sddc_chain_s,
    validation_message,
)
from rce_lib.devenv.bench_parse import PYCACHE
from rce_lib.devenv.bench_phases import phase_breakdown
from rce_lib.devenv.bench_phases import render_rows as phase_rows
from rce_lib.devenv.bench_pressure import PressureProbe, summarize_pressure
from rce_lib.devenv.bench_ui import UiProbe
from rce_lib.devenv.bench_ui import render as render_ui
from rce_lib.devenv.demo import progress_line, start_simulator
from rce_lib.devenv.processes import Group

POOLS = {"vcenter": "rce_vcenter", "nsx": "rce_nsx", "esx": "rce_esx"}


def _counts_deferred(pool: str) -> bool:
    """The shipped pool's `include_deferred` (include/pools.json): the bench changes sizes only."""
    return bool(json.loads((REPO_ROOT / "include" / "pools.json").read_text())[pool]["include_deferred"])


BENCH_TOKEN = "bench-token"
WAVE = "bench"
#: How long a started simulator may take to answer before the bench gives up on it.
SIM_REACH_S = 10.0
TI_PAGE = 1000
#: Airflow's processes write and reuse bytecode in one cache shared by every bench run (var/ is
#: not in git), whatever PYTHONDONTWRITEBYTECODE the shell has: see bench/README.md.
BYTECODE_ENV = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
T = TypeVar("T")

# airflow standalone keeps its metadata in SQLite. Under a 100-SDDC wave on a small machine
# writers wait for each other longer than sqlite3's default 5 s busy timeout, and a
# "database is locked" kills the triggerer for good (standalone does not restart it):
# every deferred task then waits forever. Airflow imports these by dotted path.
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 120}
SQLITE_CONNECT_ARGS_ASYNC: dict[str, Any] = {"timeout": 120}

__all__ = [
    "NSX_CHAIN",
    "SERVICES",
    "SOURCE_VERSION",
    "TARGET_VERSION",
    "VCENTER_CHAIN",
    "Bound",
    "fleet_size_for",
    "host_chain_s",
    "lower_bound",
    "register",
    "render_table",
    "run_bench",
    "summarize",
]


# ============================================================== processes: CPU and memory


def session_cpu_seconds(sid: int) -> tuple[float, int]:
    """utime+stime+cutime+cstime of every live process of session `sid` (exited children are in
    their parent's cutime/cstime). Airflow task processes get their own process group but stay
    in the session, so the session is the right unit. Returns (seconds, processes)."""
    seconds = [cpu for _pid, cpu in _session_cpu(sid)]
    return sum(seconds), len(seconds)


def _session_cpu(sid: int) -> Iterator[tuple[int, float]]:
    """(pid, utime+stime+cutime+cstime in seconds) of every live process of session `sid`."""
    for pid, fields in _proc_stats():
        if int(fields[3]) == sid:
            yield pid, _cpu_s(fields)


def _cpu_s(fields: Sequence[str]) -> float:
    """utime+stime+cutime+cstime in seconds, from /proc/<pid>/stat's fields after the command."""
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


#: (cmdline fragment, role) in match order; a process matching none is "other"
_ROLES: tuple[tuple[str, str], ...] = (
    ("LocalExecutor", "executor workers + task processes"),
    ("celery", "executor workers + task processes"),
    ("scheduler", "scheduler"),
    ("triggerer", "triggerer"),
    ("dag-processor", "dag-processor"),
    ("api_server", "api-server (UI, REST, execution API)"),
    ("api-server", "api-server (UI, REST, execution API)"),
    ("standalone", "standalone supervisor"),
)


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    return next((role for fragment, role in _ROLES if fragment in cmdline), "other")


def session_cpu_by_role(sid: int) -> dict[str, float]:
    """CPU-seconds of session `sid` by Airflow component: a process's own time and its reaped
    children's (a LocalExecutor worker's children are the task processes it supervised).
    Subtract two readings for the cost of an interval."""
    out: dict[str, float] = {}
    for pid, cpu in _session_cpu(sid):
        role = _role(pid)
        out[role] = out.get(role, 0.0) + cpu
    return out


def session_pids(sid: int) -> list[int]:
    return [pid for pid, fields in _proc_stats() if int(fields[3]) == sid and fields[0] != "Z"]


def session_memory(sid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, summed over the live processes of session `sid`. RSS counts pages shared
    between forked processes once per process (an upper bound); PSS splits them among the sharers,
    so its sum is what the session really holds."""
    rss = pss = 0
    for pid in session_pids(sid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


class MemorySampler:
    """Peaks of `session_memory` over the run, sampled every `interval` s in a daemon thread
    (reading smaps_rollup walks each process's page tables: not every second)."""

    def __init__(self, sid: int, interval: float = 10.0) -> None:
        self.sid = sid
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = session_memory(self.sid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _proc_stats() -> Iterable[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat.rsplit(")", 1)[-1].split()


def postgres_cpu_seconds() -> float | None:
    """CPU-seconds of the local PostgreSQL server so far: its postmaster's, its children's (each
    in a session of its own) and its reaped backends' (the postmaster's cutime/cstime). None when
    no server runs here. Subtract two readings for an interval."""
    stats = dict(_proc_stats())

    def comm(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return ""

    for pid, fields in stats.items():
        if comm(pid) == "postgres" and comm(int(fields[1])) != "postgres":
            return sum(_cpu_s(f) for child, f in stats.items() if child == pid or int(f[1]) == pid)
    return None


def kill_session(sid: int) -> None:
    """SIGKILL what is left of a session we started (task processes live in their own groups)."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ============================================================== arguments


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="benchmark one wave of N SDDCs on the simulator under airflow standalone",
        description="One wave of N SDDCs under airflow standalone against the simulator, with fixed "
        "settings (time scale 60, the simulator's durations, capacities vcenter 60 / nsx 30 / esx 120), "
        "then a batch-serial baseline on the same fleet; prints one table (bench/README.md).",
    )
    bench.add_argument(
        "--sddcs",
        type=int,
        default=200,
        help="SDDCs in the wave (default 200; the issue's sizes: 50, 200, 1000)",
    )
    bench.add_argument(
        "--time-scale",
        type=float,
        default=STANDARD_TIME_SCALE,
        help=f"simulated seconds per real second (standard {STANDARD_TIME_SCALE:g}: one simulated minute "
        "per second)",
    )
    bench.add_argument(
        "--seed", type=int, default=STANDARD_SEED, help=f"fleet seed (standard {STANDARD_SEED})"
    )
    bench.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="a service's fleet-wide capacity, = its pool slots (repeatable; standard "
        + " ".join(f"{k}={v}" for k, v in STANDARD_CAPACITY.items())
        + ")",
    )
    bench.add_argument(
        "--duration",
        action="append",
        default=[],
        metavar="TYPE=SIM_S",
        help="a task type's simulated seconds (repeatable; standard: the simulator's defaults)",
    )
    bench.add_argument(
        "--max-parallel", type=int, default=None, help="the wave's max_parallel (standard: N, all at once)"
    )
    bench.add_argument(
        "--capacity-change",
        default=None,
        metavar="SERVICE=N@SECONDS",
        help="lower (or raise) a service's capacity in the simulator N real seconds after the trigger, "
        "to show the engine's adaptive concurrency (non-standard)",
    )
    baseline = bench.add_mutually_exclusive_group()
    baseline.add_argument(
        "--baseline-batch",
        type=int,
        default=None,
        metavar="K",
        help="SDDCs per batch of the batch-serial baseline (default: the NSX capacity, at most N)",
    )
    baseline.add_argument("--no-baseline", action="store_true", help="skip the batch-serial baseline")
    bench.add_argument(
        "--metadata-db",
        choices=("sqlite", "postgres"),
        default=STANDARD_METADATA_DB,
        help="Airflow's metadata DB and the ledger: standalone's SQLite (standard) or fresh databases on "
        f"the local PostgreSQL ({PG_SERVER}), dropped afterwards, as a deployment runs them",
    )
    bench.add_argument(
        "--parse-only",
        action="store_true",
        help="only measure the DAG files' parse time (airflow dags report) with a --parse-fleet simulated "
        "fleet; runs no wave",
    )
    bench.add_argument(
        "--parse-fleet", type=int, default=10_000, help="simulated fleet for --parse-only (default 10000)"
    )
    bench.add_argument(
        "--parse-repeats", type=int, default=3, help="reports per file for --parse-only (default 3)"
    )
    bench.add_argument(
        "--home", type=Path, default=None, help="fresh AIRFLOW_HOME (default var/bench/run-<N>-<time>)"
    )
    bench.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    bench.add_argument(
        "--timeout", type=float, default=3600, help="give up on the wave, and on the baseline, after this (s)"
    )
    bench.set_defaults(func=run_bench)


def _pairs(values: Sequence[str], flag: str, what: str) -> dict[str, str]:
    from rce_lib.cli import CommandError

    out: dict[str, str] = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or not key.strip() or not number.strip():
            raise CommandError(f"{flag}: expected {what}, got {value!r}")
        out[key.strip()] = number.strip()
    return out


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The run's settings, or CommandError (exit 2) naming the bad flag; nothing has started yet."""
    from rce_lib.cli import CommandError

    try:
        return BenchSettings.model_validate(
            {
                "sddcs": args.sddcs,
                "time_scale": args.time_scale,
                "seed": args.seed,
                # strings: pydantic turns them into numbers, or names the bad one
                "capacity": _pairs(args.capacity, "--capacity", "SERVICE=N"),
                "durations_s": _pairs(args.duration, "--duration", "TYPE=SIM_S"),
                "max_parallel": args.max_parallel,
                "baseline": not args.no_baseline,
                "baseline_batch": args.baseline_batch,
                "timeout_s": args.timeout,
                "capacity_change": args.capacity_change,
                "metadata_db": args.metadata_db,
            }
        )
    except ValidationError as err:
        raise CommandError(validation_message(err)) from None


def _iso(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _prepare_home(home: Path | None, label: str) -> Path:
    return tool_home(home, tool="bench", label=label)


def _sim_config(bs: BenchSettings) -> dict[str, Any]:
    """The simulator's config for this run (both simulators, the engine's and the baseline's)."""
    return {
        "seed": bs.seed,
        "size": fleet_size_for(bs.sddcs),
        "time_scale": bs.time_scale,
        "durations_s": dict(bs.durations_s),
        "capacity": dict(bs.capacity),
        "rate_limits_enabled": True,
        "mutation_rate": {s: {"rate": 100, "burst": 200} for s in SERVICES},
        "read_rate": {"rate": 5000, "burst": 10000},
    }


def _write_inputs(home: Path, bs: BenchSettings) -> tuple[Path, Path, Path, dict[str, Any]]:
    n = bs.sddcs
    sim_cfg = _sim_config(bs)
    sim_path = home / "sim-config.yaml"
    sim_path.write_text(yaml.safe_dump(sim_cfg, sort_keys=False))
    plan = {
        "rollout": f"bench-{n}",
        "release": TARGET_VERSION,
        "defaults": {
            "max_parallel": bs.wave_parallel,
            "max_fail_percentage": 100,
            "bake_seconds": 0,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
            "schedule": None,
        },
        "waves": [
            {
                "name": WAVE,
                "selector": {"versions": [SOURCE_VERSION]},
                "size": n,
                "canary_size": 0,
                "max_parallel": bs.wave_parallel,
            }
        ],
    }
    plan_path = home / "rollout-bench.yaml"
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    # Pools at the simulator's capacities: the most the engine may have in flight per service
    # (its ceilings, rce_lib.airflow_support.pool_ceilings), as include/pools.json sets them.
    pool_slots = {s: int(bs.capacity[s]) for s in SERVICES}
    pools = {
        POOLS[s]: {
            "slots": pool_slots[s],
            "description": f"rce bench: in-flight {s} tasks, = simulator capacity",
            "include_deferred": _counts_deferred(POOLS[s]),
        }
        for s in SERVICES
    }
    pools_path = home / "pools-bench.json"
    pools_path.write_text(json.dumps(pools, indent=2))
    return (
        sim_path,
        plan_path,
        pools_path,
        {
            "capacity": dict(bs.capacity),
            "durations": dict(bs.durations_s),
            "pool_slots": pool_slots,
            "fleet_size": sim_cfg["size"],
            "seed": bs.seed,
            "standard": not bs.deviations(),
            "deviations": bs.deviations(),
            "bytecode_cache": str(PYCACHE),
        },
    )


# ============================================================== the run


def _start_sim(home: Path, *, size: int, time_scale: float, config: Path) -> tuple[Group, str, _SimClient]:
    """Start a simulator and prove it answers; CommandError (exit 2) within seconds otherwise."""
    from rce_lib.cli import CommandError

    log = home / "logs" / "simulator.log"
    try:
        sim, url = start_simulator(home, size=size, time_scale=time_scale, token=BENCH_TOKEN, config=config)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("For further information")]
        why = " / ".join(lines[-3:])[-400:] if lines else "no output"
        raise CommandError(f"the simulator did not start (see {log}): {why}") from None
    client = _SimClient(url)
    try:
        client.reachable()
    except CommandError:
        sim.stop()
        raise
    return sim, url, client


def run_bench(args: argparse.Namespace) -> int:
    from rce_lib.cli import CommandError

    bs = settings_from_args(args)
    if args.parse_only:
        if args.parse_fleet < 1 or args.parse_repeats < 1:
            raise CommandError("--parse-fleet and --parse-repeats must be >= 1")
        from rce_lib.devenv.bench_parse import run_parse_only

        home = _prepare_home(args.home, f"parse-{args.parse_fleet}")
        return run_parse_only(
            home=home, fleet=args.parse_fleet, repeats=args.parse_repeats, json_out=args.json
        )
    n = bs.sddcs
    home = _prepare_home(args.home, f"run-{n}")
    sim_path, plan_path, pools_path, settings = _write_inputs(home, bs)
    groups: list[Group] = []

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def stop_all() -> None:
        for group in reversed(groups):
            group.stop()
            kill_session(group.pid)
        groups.clear()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"rce bench: {n} SDDCs, AIRFLOW_HOME={home}", flush=True)
    print(f"settings: {bs.describe()}", flush=True)
    print(_standard_line(settings["deviations"]), flush=True)
    result: dict[str, Any] | None = None
    stack = contextlib.ExitStack()  # the databases, dropped after every process is stopped
    try:
        sim, sim_url, sim_client = _start_sim(
            home, size=settings["fleet_size"], time_scale=bs.time_scale, config=sim_path
        )
        groups.append(sim)
        print(f"simulator {sim_url} ({settings['fleet_size']} SDDCs)", flush=True)
        databases = stack.enter_context(_databases(bs.metadata_db, home))
        local = LocalAirflow(
            home=home,
            sim_url=sim_url,
            sim_token=BENCH_TOKEN,
            extra_env={
                "RCE_ROLLOUT_PLAN": str(plan_path),
                **databases.env,
                # the bench reads every task instance of the run: 8 per SDDC, in pages this big
                "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": str(TI_PAGE),
                # Bytecode, as an installed package has it: with PYTHONDONTWRITEBYTECODE set and a venv
                # installed without it, every task process would compile Airflow and rce_lib from source.
                **BYTECODE_ENV,
            },
        )
        print("migrating the Airflow DB, importing the bench pools ...", flush=True)
        local.prepare()
        local.airflow("pools", "import", str(pools_path))
        standalone = local.start_standalone()
        groups.append(standalone)
        rest = AirflowRest(f"http://localhost:{local.api_port}", "admin", local.password())
        rest.wait_ready()
        dag_id = f"rce_wave_{WAVE}"
        rest.wait_for_dag(dag_id)
        _check_pools(rest, settings["pool_slots"])
        rest.unpause(dag_id)
        sim_client.post("/sim/reset-counters")
        cpu0, _ = session_cpu_seconds(standalone.pid)
        roles0 = session_cpu_by_role(standalone.pid)
        sim_cpu0, _ = session_cpu_seconds(sim.pid)
        # SQLite's work is done inside Airflow's processes; PostgreSQL's in its server's
        db_cpu0 = postgres_cpu_seconds() if bs.metadata_db == "postgres" else None
        with MemorySampler(standalone.pid) as memory:
            t_trigger = time.time()
            run_id = rest.trigger(dag_id, {"target_version": TARGET_VERSION})
            print(f"triggered {dag_id} run {run_id}", flush=True)
            ui = UiProbe(dag_id, run_id)
            with _pressure(bs, sim_client, databases.ledger_url, t_trigger) as probe:
                state = _wait(rest, dag_id, run_id, timeout=bs.timeout_s, watch=[sim, standalone], ui=ui)
            t_seen = time.time()
        cpu1, procs = session_cpu_seconds(standalone.pid)
        roles1 = session_cpu_by_role(standalone.pid)
        sim_cpu1, _ = session_cpu_seconds(sim.pid)
        db_cpu1 = postgres_cpu_seconds() if db_cpu0 is not None else None
        db_cpu_s = db_cpu1 - db_cpu0 if db_cpu0 is not None and db_cpu1 is not None else None
        counters = sim_client.get("/sim/counters")
        tis = _patient(lambda: rest.task_instances(dag_id, run_id, page_size=TI_PAGE))
        run = _patient(lambda: rest.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))
        fleet = sim_client.get("/sim/state")
        cohort = sorted(set(_patient(lambda: rest.sddc_ids(dag_id, run_id)).values()))
        tasks = [t for sddc_id in cohort for t in sim_client.tasks(sddc_id)]
        result = summarize(
            n=n,
            time_scale=bs.time_scale,
            settings=settings,
            state=state,
            run=run,
            tis=tis,
            t_trigger=t_trigger,
            t_seen=t_seen,
            counters=counters,
            fleet=fleet,
            cohort=cohort,
            tasks=tasks,
            cpu_s=cpu1 - cpu0,
            cpu_procs=procs,
            cpu_by_role={r: roles1[r] - roles0.get(r, 0.0) for r in roles1},
            sim_cpu_s=sim_cpu1 - sim_cpu0,
            database_cpu_s=db_cpu_s,
            peak_rss_bytes=memory.peak_rss,
            peak_pss_bytes=memory.peak_pss,
        )
        result["home"] = str(home)
        result["ui"] = ui.summary()
        if probe is not None:
            result["pressure"] = summarize_pressure(
                probe, mutating_calls=int(counters.get("mutating_calls", 0))
            )
        engine_makespan = result["makespan_s"]["trigger_to_last_sddc_done"]
        print(
            f"engine: {state}, makespan {engine_makespan:.1f} s; stopping Airflow and its simulator",
            flush=True,
        )
        stop_all()  # the baseline gets the machine to itself, as the engine had
        if bs.baseline:
            result["baseline"] = _baseline(home, bs, settings, sim_path, groups)
            result["speedup"] = _speedup(result["baseline"], engine_makespan)
        else:
            result["baseline"], result["speedup"] = None, None
        _emit(result, args.json)
        baseline = result["baseline"]
        baseline_ok = baseline is None or (baseline["state"] == "done" and baseline["failed"] == 0)
        if result["baseline"] is not None and result["baseline"]["state"] == "interrupted":
            return 130
        return 0 if state == "success" and result["sddcs"]["failed"] == 0 and baseline_ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_all()
        stack.close()
        for s, handler in old.items():
            signal.signal(s, handler)


@dataclass(frozen=True)
class _Databases:
    env: dict[str, str]  # what Airflow's processes need to use them
    ledger_url: str


@contextmanager
def _databases(kind: str, home: Path, server: str = PG_SERVER) -> Iterator[_Databases]:
    """Airflow's metadata DB and the ledger: SQLite files in the run's home, or two fresh
    PostgreSQL databases on the local server, dropped when the run is over."""
    if kind == "sqlite":
        yield _Databases(
            env={
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS_ASYNC",
            },
            ledger_url=f"sqlite:///{home / 'rce_ledger.db'}",
        )
        return
    from sqlalchemy.exc import SQLAlchemyError

    from rce_lib.cli import CommandError

    tag = f"rce_bench_{home.name.replace('-', '_')}"[:50]
    names = (f"{tag}_meta", f"{tag}_ledger")
    created: list[str] = []
    try:
        for name in names:
            create_database(name, server)
            created.append(name)
    except SQLAlchemyError as err:
        for name in created:
            drop_database(name, server)
        why = (str(getattr(err, "orig", None) or err).strip().splitlines() or ["?"])[0][:300]
        raise CommandError(f"--metadata-db postgres: cannot create databases on {server}: {why}") from None
    pg = f"postgresql+psycopg2://{server}"
    try:
        yield _Databases(
            env={
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{pg}/{names[0]}",
                # no async PostgreSQL driver is locked (as in the distributed test): no async engine
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "",
                "AIRFLOW_CONN_RCE_STATE": f"postgresql://{server}/{names[1]}",
            },
            ledger_url=f"{pg}/{names[1]}",
        )
    finally:
        for name in created:
            with contextlib.suppress(SQLAlchemyError):
                drop_database(name, server)


@contextmanager
def _pressure(
    bs: BenchSettings, sim: _SimClient, ledger_url: str, t0: float
) -> Iterator[PressureProbe | None]:
    """The capacity change and its probe while the wave runs (nothing without --capacity-change)."""
    change = bs.change
    if change is None:
        yield None
        return
    from rce_lib.ledger import Ledger
    from rce_lib.pacing.store import Pacer

    pacer = Pacer(Ledger(ledger_url))

    def pacing() -> dict[str, tuple[float | None, int]]:
        return {s.service: (s.limit, s.in_flight) for s in pacer.states()}

    probe = PressureProbe(
        change,
        counters=lambda: sim.get("/sim/counters"),
        set_capacity=lambda service, n: sim.post("/sim/faults", {"capacity": {service: n}}),
        pacing=pacing,
        t0=t0,
    )
    with probe:
        yield probe
    print(f"capacity change applied at {probe.applied_at} s: {change.describe()}", flush=True)


def _standard_line(deviations: Sequence[str]) -> str:
    if not deviations:
        return "STANDARD SETTINGS (issue 6): comparable with every other standard run"
    return "NON-STANDARD SETTINGS: " + "; ".join(deviations) + " -- not comparable with standard runs"


def _emit(result: Mapping[str, Any], json_out: Path | None) -> None:
    print()
    print(render_table(result))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {json_out}")


def _speedup(baseline: Mapping[str, Any], engine_makespan: float) -> float | None:
    """Baseline makespan / engine makespan, when both are numbers worth dividing."""
    if baseline.get("state") != "done" or engine_makespan <= 0:
        return None
    return float(baseline["makespan_s"]) / engine_makespan


def _baseline(
    home: Path, bs: BenchSettings, settings: Mapping[str, Any], sim_path: Path, groups: list[Group]
) -> dict[str, Any]:
    """The batch-serial baseline on a second simulator with the same config (a fresh fleet)."""
    from rce_lib.devenv.bench_baseline import run_baseline, sim_connection

    k = bs.batch_size
    rule = (
        "--baseline-batch"
        if bs.baseline_batch
        else "the NSX capacity" + ("" if k == bs.capacity["nsx"] else f", capped at N = {bs.sddcs}")
    )
    print(f"baseline: batches of {k} ({rule}), a second simulator ...", flush=True)
    from rce_lib.cli import CommandError

    try:
        sim, url, client = _start_sim(
            home / "baseline", size=settings["fleet_size"], time_scale=bs.time_scale, config=sim_path
        )
    except CommandError as err:  # keep the engine's numbers: report the baseline as not run
        print(f"baseline not run: {err}", file=sys.stderr, flush=True)
        return {"state": "not run", "error": str(err), "batch_size": k, "batch_size_rule": rule, "failed": 0}
    groups.append(sim)
    client.post("/sim/reset-counters")
    sim_cpu0, _ = session_cpu_seconds(sim.pid)
    interrupted = False
    try:
        with sim_connection(url, BENCH_TOKEN) as conn_id:
            res = run_baseline(
                batch_size=k,
                target_version=TARGET_VERSION,
                source_version=SOURCE_VERSION,
                conn_id=conn_id,
                timeout_s=bs.timeout_s,
                progress=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
            )
    except KeyboardInterrupt:
        interrupted = True
        res = None
    sim_cpu1, _ = session_cpu_seconds(sim.pid)
    if res is None or interrupted:
        return {"state": "interrupted", "batch_size": k, "batch_size_rule": rule, "failed": 0}
    counters = client.get("/sim/counters")
    fleet = client.get("/sim/state")
    shapes = _shapes(fleet)
    n = max(1, res.sddcs)
    ideal = sum(max(sddc_chain_s(shapes.get(i, []), bs.durations_s) for i in b.sddc_ids) for b in res.batches)
    api = _api_numbers(counters, n)
    return {
        "state": res.state,
        "batch_size": k,
        "batch_size_rule": rule,
        "batches": len(res.batches),
        "poll_s": res.poll_s,
        "sddcs": res.sddcs,
        "upgraded": res.upgraded,
        "failed": len(res.failed),
        "failures": dict(list(res.failed.items())[:10]),
        "makespan_s": res.makespan_s,
        "ideal_s": ideal / bs.time_scale,
        "ideal_sim_s": ideal,
        "api": api,
        "duplicate_starts": int(counters.get("duplicate_starts", {}).get("count", 0)),
        "retry_after_violations": int(counters.get("retry_after_violations", {}).get("count", 0)),
        "cpu_s": res.cpu_s,
        "cpu_s_per_sddc": res.cpu_s / n,
        "simulator_cpu_s": sim_cpu1 - sim_cpu0,
    }


def _shapes(fleet: Mapping[str, Any]) -> dict[str, list[int]]:
    """Hosts per cluster (largest first) of every SDDC in a GET /sim/state answer."""
    out: dict[str, list[int]] = {}
    for s in fleet.get("sddcs", []):
        per_cluster: Counter[str] = Counter(h["cluster_id"] for h in s.get("hosts", []))
        out[str(s["id"])] = sorted(per_cluster.values(), reverse=True)
    return out


def _check_pools(rest: AirflowRest, slots: Mapping[str, int]) -> None:
    for service, pool in POOLS.items():
        got = rest.request("GET", f"/pools/{pool}")
        deferred = _counts_deferred(pool)
        if int(got["slots"]) != slots[service] or bool(got.get("include_deferred")) != deferred:
            rest.request(
                "PATCH",
                f"/pools/{pool}",
                json={"name": pool, "slots": slots[service], "include_deferred": deferred},
            )


def _wait(
    rest: AirflowRest,
    dag_id: str,
    run_id: str,
    *,
    timeout: float,
    watch: Sequence[Group] = (),
    ui: UiProbe | None = None,
) -> str:
    """Poll the run (every 5 s; progress, and a load of the UI's grid view, every 30 s). Light
    on purpose: the bench's own reads load the same SQLite-backed api-server the run needs. A
    process of `watch` that exits (the simulator, airflow standalone) ends the wait at once:
    the run could only hang."""
    from rce_lib.cli import CommandError

    deadline = time.monotonic() + timeout
    last_line, last_print = "", 0.0
    state = "queued"
    unhealthy = 0
    while time.monotonic() < deadline:
        for group in watch:
            if not group.alive():
                raise CommandError(
                    f"the {group.name} exited during the run (see {group.log_path}): "
                    f"{(group.log_tail(1) or 'no output').strip()}"
                )
        state = _patient(lambda: rest.run_state(dag_id, run_id))
        if state in ("success", "failed"):
            return state
        now = time.monotonic()
        if now - last_print >= 30:
            unhealthy = _watchdog(rest, unhealthy)
            # label by map index: rendered_map_index is empty until a task of the group ran
            tis = [
                {**ti, "rendered_map_index": None}
                for ti in _patient(lambda: rest.task_instances(dag_id, run_id, page_size=TI_PAGE))
            ]
            if ui is not None:
                ui.sample(rest)
            line = progress_line(tis)
            if line != last_line or now - last_print >= 120:
                print(f"[{time.strftime('%H:%M:%S')}] {state:<8} {line}", flush=True)
                last_line, last_print = line, now
        time.sleep(5)
    raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")


#: a scheduler or triggerer whose last heartbeat is older than this is stuck. Airflow's health
#: endpoint calls one unhealthy after 30 s, which a scheduler whose passes take 40-60 s (a big
#: run) reaches again and again while it makes progress: that is slow, not stuck.
STALL_S = 120.0


def stalled(health: Mapping[str, Any], now: datetime) -> dict[str, float | None]:
    """The scheduler or triggerer that is not healthy, with its heartbeat's age in seconds if
    that is over STALL_S, or None if it reports no heartbeat at all."""
    out: dict[str, float | None] = {}
    for name in ("scheduler", "triggerer"):
        part = health.get(name) or {}
        if part.get("status") == "healthy":
            continue
        beat = part.get(f"latest_{name}_heartbeat")
        if not beat:
            out[name] = None
            continue
        age = (now - datetime.fromisoformat(str(beat))).total_seconds()
        if age > STALL_S:
            out[name] = age
    return out


def _watchdog(rest: AirflowRest, unhealthy: int) -> int:
    """Give up when the scheduler or triggerer has not heartbeat for STALL_S (standalone never
    restarts them), or has reported no heartbeat at four checks in a row."""
    health = _patient(lambda: rest.request("GET", "/monitor/health"))
    stuck = stalled(health, datetime.now(UTC))
    aged = {name: age for name, age in stuck.items() if age is not None}
    if aged:
        said = ", ".join(f"{name} (last heartbeat {age:.0f} s ago)" for name, age in aged.items())
        raise RuntimeError(f"airflow {said} is stuck (see logs/standalone.log): {health}")
    if not stuck:
        return 0
    if unhealthy + 1 >= 4:
        raise RuntimeError(
            f"airflow {', '.join(stuck)} reported no heartbeat for 2 minutes "
            f"(see logs/standalone.log): {health}"
        )
    return unhealthy + 1


def _patient(call: Callable[[], T], tries: int = 12, pause: float = 5.0) -> T:
    """Retry a read of the Airflow API: under load, standalone's SQLite answers 500
    ("database is locked") or times out now and then."""
    for attempt in range(tries):
        try:
            return call()
        except (RuntimeError, OSError) as err:  # requests' errors are OSErrors
            if attempt == tries - 1:
                raise
            print(f"  (Airflow API read failed, retrying: {str(err)[:120]})", file=sys.stderr, flush=True)
            time.sleep(pause)
    raise AssertionError("unreachable")


class _SimClient:
    """The bench's own reads of the simulator (/sim/... and task lists), not the engine's hook."""

    def __init__(self, url: str) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {BENCH_TOKEN}"

    def get(self, path: str, **params: Any) -> Any:
        resp = self.session.get(f"{self.url}{path}", params=params or None, timeout=(5, 60))
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        resp = self.session.post(f"{self.url}{path}", json=dict(body or {}), timeout=(5, 60))
        resp.raise_for_status()
        return resp.json()

    def reachable(self, within: float | None = None) -> None:
        """GET /sim/counters answers 200 within `within` s, or CommandError: a simulator the bench
        cannot reach fails the run here, in seconds, not after the wave's timeout."""
        import requests

        from rce_lib.cli import CommandError

        within = SIM_REACH_S if within is None else within
        deadline = time.monotonic() + within
        while True:
            try:
                resp = self.session.get(f"{self.url}/sim/counters", timeout=(2, 5))
                if resp.status_code == 200:
                    return
                why = f"HTTP {resp.status_code}"
            except requests.RequestException as err:
                why = type(err).__name__
            if time.monotonic() >= deadline:
                raise CommandError(f"cannot reach the simulator at {self.url} within {within:g} s ({why})")
            time.sleep(0.5)

    def tasks(self, sddc_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v1/sddcs/{sddc_id}/tasks", limit=200).get("items", []))


# ============================================================== the numbers


def summarize(
    *,
    n: int,
    time_scale: float,
    settings: Mapping[str, Any],
    state: str,
    run: Mapping[str, Any],
    tis: list[dict[str, Any]],
    t_trigger: float,
    t_seen: float,
    counters: Mapping[str, Any],
    fleet: Mapping[str, Any],
    cohort: list[str],
    tasks: list[dict[str, Any]],
    cpu_s: float,
    cpu_procs: int,
    sim_cpu_s: float,
    cpu_by_role: Mapping[str, float] | None = None,
    database_cpu_s: float | None = None,
    peak_rss_bytes: int = 0,
    peak_pss_bytes: int = 0,
) -> dict[str, Any]:
    from rce_lib.sim.state import service_of

    capacity: dict[str, int] = dict(settings["capacity"])
    durations: dict[str, float] = dict(settings["durations"])
    pool_slots: dict[str, int] = dict(settings["pool_slots"])

    # -- Airflow side: when was each SDDC done, and how did it end
    # each SDDC is one map index of the `canary` or the `bulk` group
    done_at: dict[tuple[str, int], float] = {}
    outcome: dict[tuple[str, int], str] = {}
    for ti in tis:
        task_id, idx = str(ti.get("task_id", "")), int(ti.get("map_index", -1))
        group, _, task = task_id.partition(".")
        if group not in ("canary", "bulk") or idx < 0:
            continue
        end = _iso(ti.get("end_date"))
        if ti.get("state") in ("success", "failed") and end is not None:
            done_at[group, idx] = max(done_at.get((group, idx), 0.0), end)
        if task == "postcheck" and ti.get("state") == "success":
            outcome[group, idx] = "upgraded"
        elif task == "rollback" and ti.get("state") == "success":
            outcome.setdefault((group, idx), "rolled back")
    mapped = {
        (str(ti["task_id"]).partition(".")[0], int(ti["map_index"]))
        for ti in tis
        if str(ti.get("task_id", "")).endswith(".precheck") and int(ti.get("map_index", -1)) >= 0
    }
    upgraded = sum(1 for i in mapped if outcome.get(i) == "upgraded")
    rolled_back = sum(1 for i in mapped if outcome.get(i) == "rolled back")
    last_done = max(done_at.values(), default=t_seen)
    makespan = last_done - t_trigger
    run_end = _iso(run.get("end_date")) or t_seen

    # -- simulator side: busy time per service, first start to last end
    busy: dict[str, float] = defaultdict(float)
    task_count: Counter[str] = Counter()
    starts, ends = [], []
    for t in tasks:
        created, updated = _iso(t.get("created_at")), _iso(t.get("updated_at"))
        if created is None or updated is None or created < t_trigger - 1:
            continue
        service = service_of(str(t["type"]))
        busy[service] += max(0.0, updated - created)
        task_count[str(t["type"])] += 1
        starts.append(created)
        ends.append(updated)
    sim_window = (max(ends) - min(starts)) if starts else 0.0

    # -- the bound, from the cohort's real shape (hosts per cluster)
    by_id = {s["id"]: s for s in fleet.get("sddcs", [])}
    shapes: list[list[int]] = []
    for sddc_id in cohort:
        per_cluster: Counter[str] = Counter(h["cluster_id"] for h in by_id.get(sddc_id, {}).get("hosts", []))
        shapes.append(sorted(per_cluster.values(), reverse=True))
    bound = lower_bound(shapes, durations, capacity)
    bound_real = bound.lower_bound_s / time_scale
    engine_real = bound.engine_bound_s / time_scale

    peaks = {s: int(counters.get("concurrent", {}).get(s, {}).get("peak", 0)) for s in SERVICES}

    return {
        "settings": {
            "sddcs": n,
            "fleet_size": settings["fleet_size"],
            "seed": settings.get("seed"),
            "standard": settings.get("standard"),
            "deviations": list(settings.get("deviations", [])),
            "bytecode_cache": settings.get("bytecode_cache"),
            "time_scale": time_scale,
            "durations_s": durations,
            "capacity": capacity,
            "pool_slots": pool_slots,
            "hosts_in_wave": sum(sum(s) for s in shapes),
            "clusters_in_wave": sum(len(s) for s in shapes),
        },
        "run_state": state,
        "sddcs": {
            "in_cohort": len(mapped),
            "upgraded": upgraded,
            "rolled_back": rolled_back,
            "failed": len(mapped) - upgraded,
        },
        "makespan_s": {
            "trigger_to_last_sddc_done": makespan,
            "trigger_to_run_end": run_end - t_trigger,
            "sim_first_task_to_last_task": sim_window,
        },
        "lower_bound": {
            **{k: v for k, v in asdict(bound).items()},
            "lower_bound_real_s": bound_real,
            "engine_bound_real_s": engine_real,
        },
        "ratio": {
            "makespan_over_lower_bound": makespan / bound_real if bound_real else None,
            "makespan_over_engine_bound": makespan / engine_real if engine_real else None,
            "sim_window_over_lower_bound": sim_window / bound_real if bound_real else None,
        },
        "utilisation": {
            s: {
                "busy_task_s": busy.get(s, 0.0),
                "of_capacity_x_makespan": busy.get(s, 0.0) / (capacity[s] * makespan)
                if makespan > 0
                else None,
                "at_most": bound.max_utilisation[s],  # any schedule, at the lower bound
            }
            for s in SERVICES
        },
        "tasks_created": dict(task_count),
        "api": {
            **_api_numbers(counters, n),
            "task_polls_by_type": dict(sorted(counters.get("task_polls", {}).items())),
            "health_reads_note": "GET /health: postcheck per SDDC, plus the canary gate's samples "
            "(per canary SDDC per sample interval, not one SDDC's upgrade; the bench wave has no canary)",
        },
        "concurrency": {
            s: {"peak": peaks[s], "pool_slots": pool_slots[s], "capacity": capacity[s]} for s in SERVICES
        },
        "phases": phase_breakdown(tis, t_trigger),
        "duplicate_starts": int(counters.get("duplicate_starts", {}).get("count", 0)),
        "retry_after_violations": int(counters.get("retry_after_violations", {}).get("count", 0)),
        "cpu": {
            "orchestration_cpu_s": cpu_s,
            "orchestration_cpu_s_per_sddc": cpu_s / n,
            "session_processes_at_end": cpu_procs,
            "by_component": {
                r: round(v, 2) for r, v in sorted((cpu_by_role or {}).items(), key=lambda kv: -kv[1])
            },
            "simulator_cpu_s": sim_cpu_s,
            # a PostgreSQL metadata DB's server (None: SQLite, whose work is in the total above)
            "database_server_cpu_s": database_cpu_s,
            "peak_rss_bytes": peak_rss_bytes,
            "peak_pss_bytes": peak_pss_bytes,
        },
    }


def _api_numbers(counters: Mapping[str, Any], n: int) -> dict[str, Any]:
    """Requests by route and status, and the share of mutating calls refused with 429/503,
    from a GET /sim/counters answer (engine and baseline alike)."""
    total = int(counters.get("requests_total", 0))
    mutating = int(counters.get("mutating_calls", 0))
    by_route: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    refused = 0
    for r in counters.get("requests", []):
        by_route[f"{r['method']} {r['route']}"] += int(r["count"])
        by_status[str(r["status"])] += int(r["count"])
        if r["method"] in ("POST", "PUT") and str(r["status"]) in ("429", "503"):
            refused += int(r["count"])
    return {
        "requests_total": total,
        "requests_per_sddc": total / n,
        "mutating_calls": mutating,
        "mutating_per_sddc": mutating / n,
        "by_route": dict(by_route.most_common()),
        "by_route_per_sddc": {k: v / n for k, v in by_route.most_common()},
        "by_status": dict(by_status),
        "http_429": dict(counters.get("http_429", {})),
        "http_503": dict(counters.get("http_503", {})),
        "capacity_503": dict(counters.get("capacity_503", {})),
        "mutating_refused": refused,
        "mutating_refused_share": refused / mutating if mutating else 0.0,
    }


@dataclass
class _Table:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", ""))

    def add(self, key: str, value: str) -> None:
        self.rows.append((f"  {key}", value))

    def render(self) -> str:
        width = max((len(k) for k, v in self.rows if v), default=0)  # section titles may overhang
        line = "=" * min(110, width + 2 + max(len(v) for _, v in self.rows))
        body = [f"{k:<{width}}  {v}" if v else k for k, v in self.rows]
        return "\n".join([line, *body, line])


def _fmt_s(real: float, scale: float) -> str:
    return f"{real:8.1f} s  (= {real * scale / 3600:.2f} sim-h)"


def render_table(r: Mapping[str, Any]) -> str:
    s, lb, ms, scale = r["settings"], r["lower_bound"], r["makespan_s"], r["settings"]["time_scale"]
    t = _Table()
    t.section("settings")
    deviations = s.get("deviations") or []
    if deviations:
        t.add("NON-STANDARD SETTINGS", "; ".join(deviations))
    else:
        t.add(
            "benchmark settings", "STANDARD (issue 6: time scale 60, simulator durations, fixed capacities)"
        )
    t.add(
        "SDDCs in wave / fleet size",
        f"{s['sddcs']} / {s['fleet_size']}  ({s['clusters_in_wave']} clusters, {s['hosts_in_wave']} hosts)",
    )
    t.add("time scale / fleet seed", f"{scale:g} sim-s per real s / {s.get('seed')}")
    t.add("durations (sim-s)", ", ".join(f"{k} {v:g}" for k, v in s["durations_s"].items()))
    t.add(
        "capacity / pool slots", ", ".join(f"{k} {s['capacity'][k]}/{s['pool_slots'][k]}" for k in SERVICES)
    )
    if s.get("bytecode_cache"):
        t.add("Airflow's Python bytecode", f"cached in {s['bytecode_cache']}")
    t.add(
        "run state / SDDCs upgraded",
        f"{r['run_state']} / {r['sddcs']['upgraded']} of "
        f"{r['sddcs']['in_cohort']} (rolled back {r['sddcs']['rolled_back']})",
    )
    t.section("makespan (real seconds)")
    t.add("trigger -> last SDDC done", _fmt_s(ms["trigger_to_last_sddc_done"], scale))
    t.add("trigger -> DAG run end", _fmt_s(ms["trigger_to_run_end"], scale))
    t.add("sim: first task start -> last task end", _fmt_s(ms["sim_first_task_to_last_task"], scale))
    t.section("ideal lower bound (sim-s from capacities and durations)")
    t.add("critical path, clusters in parallel", f"{lb['critical_path_contract_s']:.0f}")
    t.add("critical path, hosts one at a time (engine)", f"{lb['critical_path_engine_s']:.0f}")
    for svc in SERVICES:
        t.add(
            f"{svc}: work/capacity | +head+tail",
            f"{lb['service_plain_s'][svc]:.0f} | {lb['service_headtail_s'][svc]:.0f}"
            f"  (work {lb['service_work_s'][svc]:.0f} task-s)",
        )
    t.add(
        "LOWER BOUND (max of the above, contract)",
        f"{lb['lower_bound_s']:.0f} sim-s = {lb['lower_bound_real_s']:.1f} s real  [{lb['binding']}]",
    )
    t.add(
        "bound with engine host order",
        f"{lb['engine_bound_s']:.0f} sim-s = {lb['engine_bound_real_s']:.1f} s real",
    )
    t.section("ratio")
    ratio = r["ratio"]
    t.add("makespan / lower bound", _ratio(ratio["makespan_over_lower_bound"]))
    t.add("makespan / engine-order bound", _ratio(ratio["makespan_over_engine_bound"]))
    t.add("sim window / lower bound", _ratio(ratio["sim_window_over_lower_bound"]))
    t.section("utilisation (busy task-s / (capacity x makespan))")
    for svc in SERVICES:
        u = r["utilisation"][svc]
        best = f"; at most {_pct(u['at_most'])} at the lower bound" if "at_most" in u else ""
        t.add(svc, f"{_pct(u['of_capacity_x_makespan'])}  ({u['busy_task_s']:.0f} real task-s{best})")
    t.section("API")
    api = r["api"]
    t.add("requests total / per SDDC", f"{api['requests_total']} / {api['requests_per_sddc']:.1f}")
    t.add("mutating calls total / per SDDC", f"{api['mutating_calls']} / {api['mutating_per_sddc']:.1f}")
    for route, count in api.get("by_route", {}).items():
        t.add(f"  {route}", f"{count} / {count / max(1, s['sddcs']):.1f} per SDDC")
    polls = api.get("task_polls_by_type") or {}
    if polls:
        t.add(
            "task polls by task type / per task",
            ", ".join(
                f"{k} {v}/{v / max(1, r['tasks_created'].get(k, 0)):.1f}" for k, v in sorted(polls.items())
            ),
        )
    t.add("HTTP 429 by service", _counts(api["http_429"]))
    t.add(
        "HTTP 503 by service (at capacity)", f"{_counts(api['http_503'])}  ({_counts(api['capacity_503'])})"
    )
    t.add(
        "mutating calls refused (429/503)",
        f"{api['mutating_refused']} = {_pct(api['mutating_refused_share'])}",
    )
    t.section("concurrency (peak tasks on the simulator vs pool slots vs capacity)")
    for svc in SERVICES:
        c = r["concurrency"][svc]
        t.add(svc, f"{c['peak']} / {c['pool_slots']} / {c['capacity']}")
    if r.get("phases"):
        t.section("where an SDDC's time goes (s, median/p90): after upstream | scheduled->start | run")
        for key, value in phase_rows(r["phases"]):
            t.add(key, value)
    t.section("correctness")
    t.add("duplicate starts", str(r["duplicate_starts"]))
    t.add("Retry-After violations", str(r["retry_after_violations"]))
    _cpu_rows(t, r)
    if "ui" in r:
        t.add("Airflow UI grid view of the run, loaded every 30 s", render_ui(r["ui"]))
    _pressure_rows(t, r)
    _baseline_rows(t, r)
    return t.render()


def _cpu_rows(t: _Table, r: Mapping[str, Any]) -> None:
    t.section("orchestration cost (airflow standalone session, trigger -> end)")
    cpu = r["cpu"]
    t.add(
        "CPU-seconds total / per SDDC",
        f"{cpu['orchestration_cpu_s']:.1f} / {cpu['orchestration_cpu_s_per_sddc']:.2f}",
    )
    for role, seconds in cpu.get("by_component", {}).items():
        t.add(f"  {role}", f"{seconds:.1f} / {seconds / r['settings']['sddcs']:.2f}")
    db_cpu = cpu.get("database_server_cpu_s")
    if db_cpu is not None:
        t.add("PostgreSQL server CPU-seconds (SQLite's are in the total)", f"{db_cpu:.1f}")
        with_db = cpu["orchestration_cpu_s"] + db_cpu
        t.add("  total with it / per SDDC", f"{with_db:.1f} / {with_db / r['settings']['sddcs']:.2f}")
    t.add("simulator CPU-seconds", f"{cpu['simulator_cpu_s']:.1f}")
    t.add(
        "peak memory, sum of the session's processes",
        f"PSS {_mib(cpu.get('peak_pss_bytes'))}, RSS {_mib(cpu.get('peak_rss_bytes'))}"
        " (RSS: shared pages once per process)",
    )


def _pressure_rows(t: _Table, r: Mapping[str, Any]) -> None:
    p = r.get("pressure")
    if not p:
        return
    c = p["change"]
    t.section(f"capacity change: {c['service']} -> {c['capacity']} at {c['at_s']:g} s (adaptive concurrency)")
    t.add("applied at (s after trigger)", _num(p["applied_at_s"], "never"))
    t.add(
        "capacity refusals (503) / share of mutating calls",
        f"{p['capacity_refusals']} / {_pct(p['capacity_refusals_share_of_mutating'])}",
    )
    t.add(
        "in flight before / peak after / mean after (busy)",
        f"{_num(p['mean_in_flight_before'])} / {_num(p['peak_in_flight_after'])} / "
        f"{_num(p['mean_in_flight_after_while_busy'])}  (new capacity {c['capacity']}: "
        f"{_ratio(p['utilisation_of_new_capacity'])} of it used)",
    )
    t.add(
        "engine limit: closed after (s) / min / at the end",
        f"{_num(p['limit_closed_after_s'], 'never')} / {_num(p['limit_min'])}"
        f" / {_num(p['limit_last'], 'open')}",
    )
    timeline = p["timeline"][:: max(1, len(p["timeline"]) // 12)]
    t.add(
        "t: in flight / engine limit",
        "  ".join(f"{s['t']:.0f}s:{s['sim_in_flight']}/{_num(s['limit'], 'open', '.0f')}" for s in timeline),
    )


def _num(value: float | None, missing: str = "-", fmt: str = ".1f") -> str:
    return missing if value is None else format(value, fmt)


def _baseline_rows(t: _Table, r: Mapping[str, Any]) -> None:
    b = r.get("baseline")
    t.section("batch-serial baseline (like Ansible serial: k; no Airflow)")
    if b is None:
        t.add("baseline", "skipped (--no-baseline)")
        return
    if b.get("state") in ("interrupted", "not run"):
        why = f": {b['error']}" if b.get("error") else ""
        t.add("baseline", f"{b['state']} (batches of {b['batch_size']}){why}")
        return
    scale = r["settings"]["time_scale"]
    t.add(
        "batch size k / batches / poll",
        f"{b['batch_size']} ({b['batch_size_rule']}) / {b['batches']} / every {b['poll_s']:g} s",
    )
    t.add("state / SDDCs upgraded", f"{b['state']} / {b['upgraded']} of {b['sddcs']} (failed {b['failed']})")
    t.add("baseline makespan", _fmt_s(b["makespan_s"], scale))
    t.add(
        "baseline with no overhead (sum of slowest per batch)",
        f"{b['ideal_sim_s']:.0f} sim-s = {b['ideal_s']:.1f} s real",
    )
    api = b["api"]
    t.add(
        "requests / per SDDC; mutating refused",
        f"{api['requests_total']} / {api['requests_per_sddc']:.1f}; "
        f"{api['mutating_refused']} = {_pct(api['mutating_refused_share'])}",
    )
    t.add(
        "duplicate starts / Retry-After violations",
        f"{b['duplicate_starts']} / {b['retry_after_violations']}",
    )
    t.add("CPU-seconds total / per SDDC (driver)", f"{b['cpu_s']:.1f} / {b['cpu_s_per_sddc']:.2f}")
    t.add("SPEED-UP (baseline makespan / engine makespan)", _ratio(r.get("speedup")))


def _mib(value: int | None) -> str:
    return "n/a" if not value else f"{value / 2**20:.0f} MiB"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _counts(values: Mapping[str, Any]) -> str:
    nonzero = {k: v for k, v in values.items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(nonzero.items())) if nonzero else "0"
