"""`rce bench`: one wave of N SDDCs on the simulator under `airflow standalone`.

Prints one table: makespan against an honest lower bound computed from the
simulator's capacities and durations, service utilisation, API calls per SDDC,
throttling, peak concurrency against pools and capacities, correctness counters
(duplicate starts, Retry-After violations) and orchestration CPU per SDDC.
`--json OUT` writes the same numbers. Every process started is stopped at the
end, also on error or Ctrl-C. See bench/README.md for what each number means.

The lower-bound arithmetic (`lower_bound`) is a pure function, unit-tested.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rce_lib.devenv.airflow_local import REPO_ROOT, LocalAirflow
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.demo import progress_line, start_simulator
from rce_lib.devenv.processes import Group

SERVICES = ("vcenter", "nsx", "esx")
POOLS = {"vcenter": "rce_vcenter", "nsx": "rce_nsx", "esx": "rce_esx"}
BENCH_TOKEN = "bench-token"
WAVE = "bench"
SOURCE_VERSION = "1.25.0"
TARGET_VERSION = "1.26.0"
MARKER = ".rce-bench-home"
T = TypeVar("T")

# airflow standalone keeps its metadata in SQLite. Under a 100-SDDC wave on a small machine
# writers wait for each other longer than sqlite3's default 5 s busy timeout, and a
# "database is locked" kills the triggerer for good (standalone does not restart it):
# every deferred task then waits forever. Airflow imports these by dotted path.
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 120}
SQLITE_CONNECT_ARGS_ASYNC: dict[str, Any] = {"timeout": 120}

# The per-SDDC task chain the engine runs, by service (see rce_lib/api/services.py).
VCENTER_CHAIN = ("PRECHECK", "SNAPSHOT", "UPGRADE_VCENTER")
NSX_CHAIN = ("UPGRADE_NSX",)


# ============================================================== lower bound (pure)


@dataclass(frozen=True)
class Bound:
    """The lower bounds of a wave's makespan, in simulated seconds."""

    critical_path_engine_s: float  # longest SDDC, hosts one at a time per SDDC (what rce does)
    critical_path_contract_s: float  # longest SDDC, clusters in parallel (what the contract allows)
    service_work_s: dict[str, float]  # total task-seconds per service
    service_plain_s: dict[str, float]  # work / capacity
    service_headtail_s: dict[str, float]  # min head + work / capacity + min tail (contract order)
    lower_bound_s: float  # max(critical path contract, every service bound): the true bound
    engine_bound_s: float  # the same with the engine's host order (hosts sequential per SDDC)
    binding: str  # which term gives lower_bound_s


def host_chain_s(durations: Mapping[str, float]) -> float:
    """One host: enter maintenance, upgrade, exit maintenance."""
    return 2 * float(durations["HOST_MAINTENANCE"]) + float(durations["UPGRADE_HOST"])


def lower_bound(
    sddcs: Sequence[Sequence[int]], durations: Mapping[str, float], capacity: Mapping[str, int]
) -> Bound:
    """Lower bounds of the makespan of upgrading `sddcs` (each a list of hosts per cluster).

    * critical path: one SDDC alone, every task in its order. Engine order runs
      all hosts of an SDDC one after the other; the contract allows one host per
      cluster at a time, clusters in parallel (the true bound uses that).
    * service work: a service with capacity c cannot finish W task-seconds in
      less than W / c. Tighter and still valid: no task of the service can start
      before the shortest chain ahead of it (head) and the wave cannot end before
      the shortest chain after it (tail): min head + W / c + min tail.
    """
    if not sddcs:
        zero = dict.fromkeys(SERVICES, 0.0)
        return Bound(0.0, 0.0, zero, zero, zero, 0.0, 0.0, "empty")
    d = {k: float(v) for k, v in durations.items()}
    host = host_chain_s(d)
    vc = sum(d[t] for t in VCENTER_CHAIN)
    nsx = sum(d[t] for t in NSX_CHAIN)
    seq_hosts = [host * sum(clusters) for clusters in sddcs]
    par_hosts = [host * max(clusters, default=0) for clusters in sddcs]
    cp_engine = vc + nsx + max(seq_hosts)
    cp_contract = vc + nsx + max(par_hosts)
    work = {
        "vcenter": vc * len(sddcs),
        "nsx": nsx * len(sddcs),
        "esx": host * sum(sum(clusters) for clusters in sddcs),
    }
    plain = {s: work[s] / max(1, int(capacity[s])) for s in SERVICES}

    def headtail(tails: list[float]) -> dict[str, float]:
        # vcenter: first task has no head; the last vcenter task (UPGRADE_VCENTER) is followed by
        # NSX and the hosts. nsx: after the vcenter chain, before the hosts. esx: after both.
        return {
            "vcenter": plain["vcenter"] + nsx + min(tails),
            "nsx": vc + plain["nsx"] + min(tails),
            "esx": (vc + nsx + plain["esx"]) if work["esx"] else 0.0,
        }

    ht_contract = headtail(par_hosts)
    ht_engine = headtail(seq_hosts)
    terms = {"critical path (longest SDDC, clusters in parallel)": cp_contract}
    terms.update({f"{s} work/capacity + head + tail": ht_contract[s] for s in SERVICES})
    binding = max(terms, key=lambda k: terms[k])
    engine = max(cp_engine, *ht_engine.values())
    return Bound(
        critical_path_engine_s=cp_engine,
        critical_path_contract_s=cp_contract,
        service_work_s=work,
        service_plain_s=plain,
        service_headtail_s=ht_contract,
        lower_bound_s=terms[binding],
        engine_bound_s=engine,
        binding=binding,
    )


def fleet_size_for(n: int, source_version: str = SOURCE_VERSION) -> int:
    """Smallest simulated fleet holding `n` SDDCs at `source_version` (rce_lib/sim/fleet.py rule)."""
    from rce_lib.sim.config import DEFAULT_RELEASES
    from rce_lib.sim.fleet import version_for_index

    size, found = 0, 0
    while found < n:
        size += 1
        if version_for_index(size, DEFAULT_RELEASES) == source_version:
            found += 1
    return size


# ============================================================== process CPU


def session_cpu_seconds(sid: int) -> tuple[float, int]:
    """utime+stime+cutime+cstime of every live process of session `sid` (exited children are in
    their parent's cutime/cstime). Airflow task processes get their own process group but stay
    in the session, so the session is the right unit. Returns (seconds, processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, count = 0, 0
    for _pid, fields in _proc_stats():
        if int(fields[3]) == sid:
            total += sum(int(x) for x in fields[11:15])
            count += 1
    return total / tick, count


def session_pids(sid: int) -> list[int]:
    return [pid for pid, fields in _proc_stats() if int(fields[3]) == sid and fields[0] != "Z"]


def _proc_stats() -> Iterable[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat.rsplit(")", 1)[-1].split()


def kill_session(sid: int) -> None:
    """SIGKILL what is left of a session we started (task processes live in their own groups)."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ============================================================== the run


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench", help="benchmark one wave of N SDDCs on the simulator under airflow standalone"
    )
    bench.add_argument("--sddcs", type=int, default=100, help="SDDCs in the wave (default 100)")
    bench.add_argument(
        "--time-scale", type=float, default=120.0, help="simulated seconds per real second (default 120)"
    )
    bench.add_argument("--seed", type=int, default=42, help="fleet seed (default 42)")
    bench.add_argument(
        "--max-parallel", type=int, default=None, help="the wave's max_parallel (default: N, all at once)"
    )
    bench.add_argument(
        "--home", type=Path, default=None, help="fresh AIRFLOW_HOME (default var/bench/run-<N>-<time>)"
    )
    bench.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    bench.add_argument("--timeout", type=float, default=3600, help="give up on the wave after this (s)")
    bench.set_defaults(func=run_bench)


def _iso(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _prepare_home(home: Path | None, n: int) -> Path:
    if home is None:
        home = REPO_ROOT / "var" / "bench" / f"run-{n}-{time.strftime('%Y%m%d-%H%M%S')}"
    home = home.resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise SystemExit(f"{home} is not empty and not a bench home; give a fresh --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by rce bench; wiped by the next run with this --home\n")
    return home


def _write_inputs(home: Path, n: int, args: argparse.Namespace) -> tuple[Path, Path, Path, dict[str, Any]]:
    from rce_lib.sim.config import DEFAULT_CAPACITY, DEFAULT_DURATIONS

    capacity = dict(DEFAULT_CAPACITY)
    durations = dict(DEFAULT_DURATIONS)
    sim_cfg = {
        "seed": args.seed,
        "size": fleet_size_for(n),
        "time_scale": args.time_scale,
        "durations_s": durations,
        "capacity": capacity,
        "rate_limits_enabled": True,
        "mutation_rate": {s: {"rate": 100, "burst": 200} for s in SERVICES},
        "read_rate": {"rate": 5000, "burst": 10000},
    }
    sim_path = home / "sim-config.yaml"
    sim_path.write_text(yaml.safe_dump(sim_cfg, sort_keys=False))
    plan = {
        "rollout": f"bench-{n}",
        "release": TARGET_VERSION,
        "defaults": {
            "max_parallel": args.max_parallel or n,
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
                "max_parallel": args.max_parallel or n,
            }
        ],
    }
    plan_path = home / "rollout-bench.yaml"
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    # Pools at the simulator's capacities: the most the engine may have in flight per service.
    pool_slots = {s: int(capacity[s]) for s in SERVICES}
    pools = {
        POOLS[s]: {
            "slots": pool_slots[s],
            "description": f"rce bench: in-flight {s} tasks, = simulator capacity",
            "include_deferred": True,
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
            "capacity": capacity,
            "durations": durations,
            "pool_slots": pool_slots,
            "fleet_size": sim_cfg["size"],
        },
    )


def run_bench(args: argparse.Namespace) -> int:
    n = int(args.sddcs)
    if n < 1:
        raise SystemExit("--sddcs must be >= 1")
    home = _prepare_home(args.home, n)
    sim_path, plan_path, pools_path, settings = _write_inputs(home, n, args)
    groups: list[Group] = []

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"rce bench: {n} SDDCs, time scale {args.time_scale:g}, AIRFLOW_HOME={home}", flush=True)
    try:
        sim, sim_url = start_simulator(
            home, size=settings["fleet_size"], time_scale=args.time_scale, token=BENCH_TOKEN, config=sim_path
        )
        groups.append(sim)
        print(f"simulator {sim_url} ({settings['fleet_size']} SDDCs)", flush=True)
        local = LocalAirflow(
            home=home,
            sim_url=sim_url,
            sim_token=BENCH_TOKEN,
            extra_env={
                "RCE_ROLLOUT_PLAN": str(plan_path),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS_ASYNC",
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
        sim_client = _SimClient(sim_url)
        sim_client.post("/sim/reset-counters")
        cpu0, _ = session_cpu_seconds(standalone.pid)
        sim_cpu0, _ = session_cpu_seconds(sim.pid)
        t_trigger = time.time()
        run_id = rest.trigger(dag_id, {"target_version": TARGET_VERSION})
        print(f"triggered {dag_id} run {run_id}", flush=True)
        state = _wait(rest, dag_id, run_id, timeout=args.timeout)
        t_seen = time.time()
        cpu1, procs = session_cpu_seconds(standalone.pid)
        sim_cpu1, _ = session_cpu_seconds(sim.pid)
        counters = sim_client.get("/sim/counters")
        tis = _patient(lambda: rest.task_instances(dag_id, run_id))
        run = _patient(lambda: rest.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))
        fleet = sim_client.get("/sim/state")
        cohort = sorted(
            {
                str(ti.get("rendered_map_index"))
                for ti in tis
                if str(ti.get("task_id", "")).endswith(".precheck") and ti.get("map_index", -1) >= 0
            }
        )
        tasks = [t for sddc_id in cohort for t in sim_client.tasks(sddc_id)]
        result = summarize(
            n=n,
            time_scale=args.time_scale,
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
            sim_cpu_s=sim_cpu1 - sim_cpu0,
        )
        result["home"] = str(home)
        print()
        print(render_table(result))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
            print(f"\nwrote {args.json}")
        return 0 if state == "success" and result["sddcs"]["failed"] == 0 else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        for group in reversed(groups):
            group.stop()
            kill_session(group.pid)
        for s, handler in old.items():
            signal.signal(s, handler)


def _check_pools(rest: AirflowRest, slots: Mapping[str, int]) -> None:
    for service, pool in POOLS.items():
        got = rest.request("GET", f"/pools/{pool}")
        if int(got["slots"]) != slots[service] or not got.get("include_deferred"):
            rest.request(
                "PATCH",
                f"/pools/{pool}",
                json={"name": pool, "slots": slots[service], "include_deferred": True},
            )


def _wait(rest: AirflowRest, dag_id: str, run_id: str, *, timeout: float) -> str:
    """Poll the run (every 5 s; progress every 30 s). Light on purpose: the bench's own reads
    load the same SQLite-backed api-server the run needs."""
    deadline = time.monotonic() + timeout
    last_line, last_print = "", 0.0
    state = "queued"
    unhealthy = 0
    while time.monotonic() < deadline:
        state = _patient(lambda: rest.run_state(dag_id, run_id))
        if state in ("success", "failed"):
            return state
        now = time.monotonic()
        if now - last_print >= 30:
            unhealthy = _watchdog(rest, unhealthy)
            # label by map index: rendered_map_index is empty until a task of the group ran
            tis = [
                {**ti, "rendered_map_index": None}
                for ti in _patient(lambda: rest.task_instances(dag_id, run_id))
            ]
            line = progress_line(tis)
            if line != last_line or now - last_print >= 120:
                print(f"[{time.strftime('%H:%M:%S')}] {state:<8} {line}", flush=True)
                last_line, last_print = line, now
        time.sleep(5)
    raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")


def _watchdog(rest: AirflowRest, unhealthy: int) -> int:
    """Give up when the scheduler or triggerer stays unhealthy (standalone never restarts them)."""
    health = _patient(lambda: rest.request("GET", "/monitor/health"))
    bad = [c for c in ("scheduler", "triggerer") if (health.get(c) or {}).get("status") != "healthy"]
    if not bad:
        return 0
    if unhealthy + 1 >= 4:
        raise RuntimeError(
            f"airflow {', '.join(bad)} unhealthy for 2 minutes (see logs/standalone.log): {health}"
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
    def __init__(self, url: str) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {BENCH_TOKEN}"

    def get(self, path: str, **params: Any) -> Any:
        resp = self.session.get(f"{self.url}{path}", params=params or None, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str) -> Any:
        resp = self.session.post(f"{self.url}{path}", json={}, timeout=60)
        resp.raise_for_status()
        return resp.json()

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

    # -- API traffic
    requests = counters.get("requests", [])
    total_requests = int(counters.get("requests_total", 0))
    mutating = int(counters.get("mutating_calls", 0))
    by_route: Counter[str] = Counter()
    refused_mutating = 0
    status_count: Counter[str] = Counter()
    for r in requests:
        by_route[f"{r['method']} {r['route']}"] += int(r["count"])
        status_count[str(r["status"])] += int(r["count"])
        if r["method"] in ("POST", "PUT") and str(r["status"]) in ("429", "503"):
            refused_mutating += int(r["count"])
    peaks = {s: int(counters.get("concurrent", {}).get(s, {}).get("peak", 0)) for s in SERVICES}

    return {
        "settings": {
            "sddcs": n,
            "fleet_size": settings["fleet_size"],
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
            }
            for s in SERVICES
        },
        "tasks_created": dict(task_count),
        "api": {
            "requests_total": total_requests,
            "requests_per_sddc": total_requests / n,
            "mutating_calls": mutating,
            "mutating_per_sddc": mutating / n,
            "by_route": dict(by_route.most_common()),
            "by_status": dict(status_count),
            "http_429": dict(counters.get("http_429", {})),
            "http_503": dict(counters.get("http_503", {})),
            "capacity_503": dict(counters.get("capacity_503", {})),
            "mutating_refused": refused_mutating,
            "mutating_refused_share": refused_mutating / mutating if mutating else 0.0,
        },
        "concurrency": {
            s: {"peak": peaks[s], "pool_slots": pool_slots[s], "capacity": capacity[s]} for s in SERVICES
        },
        "duplicate_starts": int(counters.get("duplicate_starts", {}).get("count", 0)),
        "retry_after_violations": int(counters.get("retry_after_violations", {}).get("count", 0)),
        "cpu": {
            "orchestration_cpu_s": cpu_s,
            "orchestration_cpu_s_per_sddc": cpu_s / n,
            "session_processes_at_end": cpu_procs,
            "simulator_cpu_s": sim_cpu_s,
        },
    }


@dataclass
class _Table:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", ""))

    def add(self, key: str, value: str) -> None:
        self.rows.append((f"  {key}", value))

    def render(self) -> str:
        width = max(len(k) for k, _ in self.rows)
        line = "=" * min(110, width + 2 + max(len(v) for _, v in self.rows))
        body = [f"{k:<{width}}  {v}" if v else k for k, v in self.rows]
        return "\n".join([line, *body, line])


def _fmt_s(real: float, scale: float) -> str:
    return f"{real:8.1f} s  (= {real * scale / 3600:.2f} sim-h)"


def render_table(r: Mapping[str, Any]) -> str:
    s, lb, ms, scale = r["settings"], r["lower_bound"], r["makespan_s"], r["settings"]["time_scale"]
    t = _Table()
    t.section("settings")
    t.add(
        "SDDCs in wave / fleet size",
        f"{s['sddcs']} / {s['fleet_size']}  ({s['clusters_in_wave']} clusters, {s['hosts_in_wave']} hosts)",
    )
    t.add("time scale", f"{scale:g} sim-s per real s")
    t.add("durations (sim-s)", ", ".join(f"{k} {v:g}" for k, v in s["durations_s"].items()))
    t.add(
        "capacity / pool slots", ", ".join(f"{k} {s['capacity'][k]}/{s['pool_slots'][k]}" for k in SERVICES)
    )
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
        t.add(svc, f"{_pct(u['of_capacity_x_makespan'])}  ({u['busy_task_s']:.0f} real task-s)")
    t.section("API")
    api = r["api"]
    t.add("requests total / per SDDC", f"{api['requests_total']} / {api['requests_per_sddc']:.1f}")
    t.add("mutating calls total / per SDDC", f"{api['mutating_calls']} / {api['mutating_per_sddc']:.1f}")
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
    t.section("correctness")
    t.add("duplicate starts", str(r["duplicate_starts"]))
    t.add("Retry-After violations", str(r["retry_after_violations"]))
    t.section("orchestration cost (airflow standalone session, trigger -> end)")
    cpu = r["cpu"]
    t.add(
        "CPU-seconds total / per SDDC",
        f"{cpu['orchestration_cpu_s']:.1f} / {cpu['orchestration_cpu_s_per_sddc']:.2f}",
    )
    t.add("simulator CPU-seconds", f"{cpu['simulator_cpu_s']:.1f}")
    return t.render()


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _counts(values: Mapping[str, Any]) -> str:
    nonzero = {k: v for k, v in values.items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(nonzero.items())) if nonzero else "0"
