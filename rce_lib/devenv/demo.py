"""`rce demo`: simulator + airflow standalone + one wave, watched from the terminal.

Leaves the UI running at http://localhost:8080 until Ctrl-C (or exits with
--exit-when-done), and stops every process group it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rce_lib.devenv.airflow_local import API_PORT, REPO_ROOT, LocalAirflow
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.processes import Group, kill_listeners, start_exporter, start_group

SIM_PORT = 8600
METRICS_PORT = 9464
SIM_TOKEN = "demo-token"
READY_PREFIX = "rce-sim listening on "


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser("demo", help="run the demo wave on airflow standalone against the simulator")
    demo.add_argument(
        "--home", type=Path, default=REPO_ROOT / ".airflow", help="AIRFLOW_HOME (default ./.airflow)"
    )
    demo.add_argument("--wave", default="canary", help="wave of include/rollout.yaml to run")
    demo.add_argument("--target", default="1.26.0", help="target release")
    demo.add_argument("--size", type=int, default=24, help="simulated fleet size")
    demo.add_argument("--time-scale", type=float, default=600.0, help="simulated seconds per real second")
    demo.add_argument("--fresh", action="store_true", help="forget the previous demo's state first")
    demo.add_argument("--exit-when-done", action="store_true", help="stop everything when the wave ends")
    demo.add_argument("--timeout", type=float, default=1800, help="give up waiting for the wave after this")
    demo.set_defaults(func=run_demo)


def start_simulator(
    home: Path,
    *,
    size: int,
    time_scale: float,
    port: int = 0,
    token: str = SIM_TOKEN,
    config: Path | None = None,
) -> tuple[Group, str]:
    """Start `rce sim serve` as its own process group; returns it and its base URL.
    Port 0 picks a free port (tests, benchmarks); the demo asks for 8600."""
    if port:
        kill_listeners(port)
    argv = [
        sys.executable,
        "-m",
        "rce_lib.sim",
        "serve",
        "--port",
        str(port),
        "--size",
        str(size),
        "--time-scale",
        str(time_scale),
        "--state-dir",
        str(home / "sim"),
        "--token",
        token,
    ]
    if config is not None:
        argv += ["--config", str(config)]
    sim = start_group(
        "simulator",
        argv,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONUNBUFFERED": "1"},
        log_path=home / "logs" / "simulator.log",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in reversed(sim.log_tail(20).splitlines()):
            if line.startswith(READY_PREFIX):
                return sim, line.removeprefix(READY_PREFIX).strip()
        if not sim.alive():
            break
        time.sleep(0.2)
    sim.stop()
    raise RuntimeError(f"simulator did not start:\n{sim.log_tail()}")


def run_demo(args: argparse.Namespace) -> int:
    home: Path = args.home.resolve()
    if args.fresh and home.exists():
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    groups: list[Group] = []

    def stop_all(*_: Any) -> None:
        for group in reversed(groups):
            group.stop()
        sys.exit(130)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    print(f"AIRFLOW_HOME={home}")
    print(f"starting the fleet simulator on http://127.0.0.1:{SIM_PORT} ...", flush=True)
    sim, sim_url = start_simulator(home, size=args.size, time_scale=args.time_scale, port=SIM_PORT)
    groups.append(sim)
    local = LocalAirflow(home=home, sim_url=sim_url, sim_token=SIM_TOKEN, api_port=API_PORT)
    print("migrating the Airflow DB and creating pools ...", flush=True)
    local.prepare()
    print("starting airflow standalone (scheduler, dag-processor, triggerer, api-server) ...", flush=True)
    groups.append(local.start_standalone())
    kill_listeners(METRICS_PORT)
    groups.append(
        start_exporter(
            METRICS_PORT,
            f"sqlite:///{home / 'rce_ledger.db'}",
            env=local.env(),
            log_path=home / "logs" / "exporter.log",
        )
    )
    rest = AirflowRest(f"http://localhost:{local.api_port}", "admin", local.password())
    rest.wait_ready()
    dag_id = f"rce_wave_{args.wave}"
    rest.wait_for_dag(dag_id)
    rest.unpause(dag_id)
    run_id = rest.trigger(dag_id, {"target_version": args.target})
    print(f"triggered {dag_id} run {run_id} (target {args.target})\n", flush=True)
    state = watch(rest, dag_id, run_id, timeout=args.timeout)
    print_summary(home, dag_id, run_id, state)
    print_metrics(METRICS_PORT, dag_id.removeprefix("rce_wave_"))
    print(
        f"\nAirflow UI: http://localhost:{local.api_port}  user admin, password in "
        f"{local.password_file()}\nFleet simulator: {sim_url} (counters at {sim_url}/sim/counters)"
        f"\nMetrics (Prometheus text format): http://127.0.0.1:{METRICS_PORT}/metrics"
    )
    if args.exit_when_done:
        for group in reversed(groups):
            group.stop()
        return 0 if state == "success" else 1
    print("The UI stays up; press Ctrl-C to stop everything.", flush=True)
    while all(g.alive() for g in groups):
        time.sleep(2)
    stop_all()
    return 0


def watch(rest: AirflowRest, dag_id: str, run_id: str, *, timeout: float) -> str:
    """Print a line each time the picture changes: SDDCs per phase and task state."""
    deadline = time.monotonic() + timeout
    last = ""
    state = "queued"
    while time.monotonic() < deadline:
        state = rest.run_state(dag_id, run_id)
        tis = rest.task_instances(dag_id, run_id)
        line = progress_line(tis)
        if line != last:
            print(f"[{time.strftime('%H:%M:%S')}] run {state:<8} {line}", flush=True)
            last = line
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    return state


def progress_line(tis: list[dict[str, Any]]) -> str:
    """Where each SDDC is: its furthest phase task that is not yet successful."""
    by_sddc: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for ti in tis:
        group, _, task = str(ti.get("task_id", "")).partition(".")
        index = int(ti.get("map_index", -1))
        if group not in ("canary", "bulk") or index < 0:
            continue
        state = str(ti.get("state") or "pending")
        by_sddc.setdefault((group, index), []).append((task, state))
    order = ["precheck", "snapshot", "upgrade_vcenter", "upgrade_nsx", "upgrade_hosts", "postcheck"]
    where: Counter[str] = Counter()
    for tasks in by_sddc.values():
        states = dict(tasks)
        if states.get("rollback") in ("running", "deferred", "queued", "success"):
            where["rolled back" if states["rollback"] == "success" else "rolling back"] += 1
            continue
        current = next((p for p in order if states.get(p) != "success"), None)
        if current is None:
            where["done"] += 1
        else:
            where[f"{current}:{states.get(current) or 'none'}"] += 1
    gate = next((str(ti.get("state") or "pending") for ti in tis if ti.get("task_id") == "canary_gate"), None)
    line = f"{len(by_sddc)} SDDCs | " + ", ".join(f"{k} {v}" for k, v in sorted(where.items()))
    return line + (f" | canary gate {gate}" if gate else "")


def print_summary(home: Path, dag_id: str, run_id: str, state: str) -> None:
    """The run's final picture: the `rce status` table (every SDDC, phases, failures), then the
    canary gate's full judgement."""
    from datetime import UTC, datetime

    from rich.console import Console

    from rce_lib.ledger import Ledger
    from rce_lib.status.collect import collect
    from rce_lib.status.render import render

    ledger = Ledger(f"sqlite:///{home / 'rce_ledger.db'}")
    wave = dag_id.removeprefix("rce_wave_")
    print(f"\n== {dag_id} {run_id}: {state}", flush=True)
    snapshot = collect(ledger, now=datetime.now(UTC), wave=wave, run_id=run_id)
    Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False).print(render(snapshot, details=True))
    decisions = ledger.events(wave=wave, run_id=run_id, kinds=["gate_decision"])
    if decisions:
        print("\n" + decisions[-1].message + "\n")
    print(f"(live: rce status --wave {wave} --watch --ledger-url sqlite:///{home / 'rce_ledger.db'})")


def print_metrics(port: int, wave: str) -> None:
    """A few of the exporter's series, read back over HTTP as Prometheus would."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError as err:
        print(f"\n  metrics: exporter not reachable on port {port} ({err})")
        return
    print("\n== metrics (rce exporter)")
    shown = (
        "rce_sddcs",
        "rce_downstream_requests_total",
        "rce_downstream_throttled_total",
        "rce_gate_decisions_total",
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in shown and sample.value and sample.labels.get("wave", wave) == wave:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                print(f"  {sample.name}{{{labels}}} {sample.value:g}")
