"""`rce soak`: the crash-resume soak. One wave under `airflow standalone` against the
simulator while, on a seeded random schedule, the scheduler, a LocalExecutor worker, a
running task process or the triggerer is killed with SIGKILL; what was killed is restarted
and what failed is cleared through the REST API, as an operator would. Then the pass
criteria: every upgradable SDDC at the target, every downstream step started once (no
duplicate start, no work done twice), no Retry-After violation, no host left in maintenance,
no downstream task left running, and the ledger agreeing with the fleet (every record
succeeded, and a dry-run reconcile sweep finds nothing).

What was found by experiment (Airflow 3.3.2, this machine): `airflow standalone` does NOT
restart a component that dies. Its supervisor thread only reads the child's output, so a
killed scheduler stays a zombie and /monitor/health reports it unhealthy for good. So this
driver restarts the killed component itself, as a process group of its own beside the
standalone, on the same AIRFLOW_HOME and environment: what an operator does (`airflow
scheduler` in another terminal). A killed LocalExecutor worker needs no restart (the
executor forks a new one when work is queued), nor a killed task process (its worker
reports the failure and Airflow retries it).

What each kill kind kills (SIGKILL, no warning):

* scheduler: the scheduler process, with its log server and its idle executor workers
  (housekeeping: they can never get work again). Workers running a task are left running
  as orphans, as a crash of the scheduler alone leaves them: they finish their task and
  report it through the execution API.
* triggerer: the triggerer and its children (trigger runner, log server), like a crash
  of its container.
* worker: one LocalExecutor worker busy with a task (the task's supervisor). Its task
  process is left to find out; the scheduler fails the task instance after
  `task_instance_heartbeat_timeout` and Airflow retries it. A worker killed before it started
  its task leaves the task queued (see the operator below).
* task: one running task process (`airflow worker -- <ti id>`); its worker reports it.

By default every phase runs in the triggerer and no worker or task process runs any of the
wave's work, so the soak kills the scheduler and the triggerer; `phases_on_workers`
(RCE_PHASES_IN_TRIGGERER=off) puts the phases on workers and adds worker and task kills.
Kinds are dealt from a seeded deck (every len(kinds) kills in a row hold each kind once). Kill i
comes at the earlier of a seeded random gap after the previous one recovered, and the wave's
progress (read from the simulator: components and hosts at the target) passing
80% * i / (kills + 1), so that every kill lands while the wave still runs whatever the
machine's speed.

The operator (every 3 s): clears failed task instances with their failed downstream
(`only_failed`), and task instances waiting for a retry alone (`prevent_running_task`);
never anything that succeeded or runs. Also alone, a task instance queued for more than
`QUEUED_PATIENCE_S`: a worker killed after taking it from the LocalExecutor's queue and before
starting it leaves it queued for good (the LocalExecutor cannot revoke a task, so Airflow's
`task_queued_timeout` passes it by). It also restarts a component found dead that it did not
kill (reported apart, not counted as a kill).

Every process is started in a session of its own and everything left in those sessions
is killed at the end, also on error or Ctrl-C (Airflow's task processes get process
groups of their own but stay in the session; orphaned workers keep the process group).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import requests
import yaml

from rce_lib.devenv.airflow_local import REPO_ROOT, LocalAirflow, tool_home, venv_bin
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.processes import Group, start_group

KillKind = Literal["scheduler", "worker", "task", "triggerer"]
KILL_KINDS: tuple[KillKind, ...] = get_args(KillKind)
#: with the phases in the triggerer (the default) no worker runs a phase: nothing of the wave's
#: work runs in a worker or a task process to be killed, so the soak kills what does run it
TRIGGERER_KINDS: tuple[KillKind, ...] = ("scheduler", "triggerer")
ON_WORKERS_ONLY: tuple[KillKind, ...] = ("worker", "task")
SOURCE_VERSION = "1.25.0"
TARGET_VERSION = "1.26.0"
WAVE = "soak"
DAG_ID = f"rce_wave_{WAVE}"
SIM_TOKEN = "soak-token"
DEFAULT_TIME_SCALE = 600.0
# The vCenter and NSX upgrades outlive a phase's inline wait (10 s) at the default time scale,
# so that every SDDC waits deferred twice: the triggerer then holds live triggers to lose.
DURATIONS_S: dict[str, float] = {"UPGRADE_VCENTER": 15000.0, "UPGRADE_NSX": 9000.0}
# The kills' schedule: a random gap after the previous kill recovered, and at the latest when
# the wave's progress passes PROGRESS_SPAN * i / (kills + 1).
DEFAULT_GAP_S = (8.0, 22.0)
PROGRESS_SPAN = 0.8
# Detect what the kills leave behind soon (a dead worker's task after 60 s without a heartbeat,
# a dead scheduler's or triggerer's work after 20 s), but stay patient with a busy api-server:
# on 2 shared cores standalone's SQLite-backed execution API answers in tens of seconds at a
# wave's start (LocalAirflow's client timeout and connection pool allow for it). Parallelism 16:
# more task processes at once only thrash 2 cores.
AIRFLOW_ENV: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__PARALLELISM": "16",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "20",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "20",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    # standalone keeps Airflow's metadata in SQLite: writers wait for each other longer than
    # sqlite3's 5 s default under load. Not 120 s as `rce bench` does: the api-server's requests
    # can wedge each other until the busy timeout ends them (seen: every request of the
    # execution API stuck for 120 s); 30 s bounds such a stall, and a component that dies of
    # "database is locked" is restarted (Deployment.dead_components).
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_CONNECT_ARGS",
}
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 30}
#: a task instance queued this long lost its worker (a LocalExecutor worker picks a queued task
#: up within seconds; the execution API's slowest answers seen here took ~30 s)
QUEUED_PATIENCE_S = 90.0
RESTARTED: dict[KillKind, str] = {"scheduler": "scheduler", "triggerer": "triggerer"}
COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
T = TypeVar("T")


class SoakError(ValueError):
    """Settings the soak cannot run with (shown as one line by the CLI)."""


# ============================================================== settings and result


@dataclass(frozen=True)
class SoakSettings:
    """One soak run. `minutes` (long mode) lowers the time scale so that the wave's downstream
    work alone lasts about that long, and spreads the kills over it."""

    home: Path
    sddcs: int = 30
    kills: int = 10
    seed: int = 1
    fleet_seed: int = 42
    time_scale: float | None = None
    minutes: float | None = None
    kinds: tuple[KillKind, ...] = TRIGGERER_KINDS
    #: the phases run on workers (RCE_PHASES_IN_TRIGGERER=off), where worker and task kills hit them
    phases_on_workers: bool = False
    gap_s: tuple[float, float] | None = None
    timeout_s: float = 900.0
    log: Callable[[str], None] = print

    def validate(self) -> None:
        from rce_lib.plan.cohort import MAX_COHORT_IDS

        if self.sddcs < 1:
            raise SoakError(f"--sddcs must be at least 1 (got {self.sddcs})")
        if self.sddcs > MAX_COHORT_IDS:
            raise SoakError(f"--sddcs must be at most {MAX_COHORT_IDS} (got {self.sddcs})")
        if self.kills < 1:
            raise SoakError(
                f"--kills must be at least 1: a soak without kills proves nothing (got {self.kills})"
            )
        if self.time_scale is not None and not self.time_scale > 0:
            raise SoakError(f"--time-scale must be > 0 (got {self.time_scale})")
        if self.minutes is not None and not self.minutes > 0:
            raise SoakError(f"--minutes must be > 0 (got {self.minutes})")
        if not self.timeout_s > 0:
            raise SoakError(f"--timeout must be > 0 (got {self.timeout_s})")
        unknown = [k for k in self.kinds if k not in KILL_KINDS]
        if not self.kinds or unknown:
            raise SoakError(f"kill kinds must be some of {', '.join(KILL_KINDS)} (got {list(self.kinds)})")
        idle = [k for k in self.kinds if k in ON_WORKERS_ONLY]
        if idle and not self.phases_on_workers:
            raise SoakError(
                f"kill kinds {', '.join(idle)} need --phases-on-workers: with the phases in the "
                "triggerer (the default) no worker or task process runs them"
            )
        if self.gap_s is not None and not 0 <= self.gap_s[0] <= self.gap_s[1]:
            raise SoakError(f"the gap between kills must be 0 <= min <= max (got {self.gap_s})")


@dataclass
class Kill:
    """One kill: when (seconds after the trigger), what, and how long until it was back."""

    at_s: float
    kind: KillKind
    pids: list[int]
    what: str
    wanted: KillKind
    progress: float
    restarted: str = ""
    recovered_s: float | None = None


@dataclass
class SoakResult:
    """What the soak saw, and its pass criteria (`failures()` empty: passed)."""

    settings: dict[str, Any]
    run_id: str = ""
    run_state: str = "not started"
    makespan_s: float | None = None
    wall_s: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    clears: int = 0
    cleared_task_instances: int = 0
    stuck_queued: list[str] = field(default_factory=list)
    """Task instances found queued longer than QUEUED_PATIENCE_S and cleared (a worker died
    after taking them: the LocalExecutor cannot revoke, so Airflow's task_queued_timeout
    never acts on them)."""
    unfinished: list[str] = field(default_factory=list)
    """Task instances not in an end state when the run did not end: what it waited on."""
    died_on_their_own: dict[str, int] = field(default_factory=dict)
    """Components found dead without a kill (and restarted): not a criterion, but reported."""
    cohort: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    not_at_target: dict[str, str] = field(default_factory=dict)
    untouched_changed: list[str] = field(default_factory=list)
    duplicate_starts: int = -1
    duplicate_details: list[dict[str, Any]] = field(default_factory=list)
    retry_after_violations: int = -1
    violation_details: list[dict[str, Any]] = field(default_factory=list)
    hosts_in_maintenance: list[str] = field(default_factory=list)
    hosts_not_connected: list[str] = field(default_factory=list)
    active_tasks_left: list[str] = field(default_factory=list)
    ledger_not_done: dict[str, str] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    tasks_created: dict[str, int] = field(default_factory=dict)
    started_twice: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def kills_by_kind(self) -> dict[str, int]:
        counted = Counter(k.kind for k in self.kills)
        return {kind: counted.get(kind, 0) for kind in KILL_KINDS}

    def criteria(self) -> list[tuple[str, bool, str]]:
        """(criterion, passed, detail) for every pass criterion, in the table's order."""
        wanted = int(self.settings.get("kills", 0))
        return [
            ("the soak ran to its end", not self.error, self.error or "yes"),
            (
                f"at least {wanted} kills landed during the wave",
                len(self.kills) >= wanted,
                str(len(self.kills)),
            ),
            (
                "the wave run succeeded",
                self.run_state == "success",
                self.run_state + (f"; waiting on: {_short(self.unfinished)}" if self.unfinished else ""),
            ),
            (
                "every upgradable SDDC at the target",
                bool(self.cohort) and not self.not_at_target,
                f"{len(self.cohort) - len(self.not_at_target)} of {len(self.cohort)}"
                + (f"; not: {_short(self.not_at_target)}" if self.not_at_target else ""),
            ),
            (
                "SDDCs outside the cohort untouched",
                not self.untouched_changed,
                _short(self.untouched_changed),
            ),
            (
                "every downstream step started once",
                self.duplicate_starts >= 0 and not self.started_twice,  # >= 0: the fleet was read
                _short(self.started_twice),
            ),
            (
                "duplicate starts == 0",
                self.duplicate_starts == 0,
                _counted(self.duplicate_starts, self.duplicate_details),
            ),
            (
                "Retry-After violations == 0",
                self.retry_after_violations == 0,
                _counted(self.retry_after_violations, self.violation_details),
            ),
            ("no host in maintenance", not self.hosts_in_maintenance, _short(self.hosts_in_maintenance)),
            ("no downstream task left running", not self.active_tasks_left, _short(self.active_tasks_left)),
            ("ledger: every cohort SDDC succeeded", not self.ledger_not_done, _short(self.ledger_not_done)),
            ("reconcile sweep (dry run) finds nothing", not self.drift, _short(self.drift)),
        ]

    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.criteria() if not ok]

    @property
    def passed(self) -> bool:
        return not self.failures()

    def table(self) -> str:
        s = self.settings
        rows: list[tuple[str, str]] = [
            (
                "SDDCs (cohort / fleet)",
                f"{len(self.cohort)} / {s.get('fleet_size')}  ({s.get('hosts')} hosts)",
            ),
            (
                "time scale / seed / fleet seed",
                f"{s.get('time_scale'):g} / {s.get('seed')} / {s.get('fleet_seed')}",
            ),
            ("makespan (trigger -> run end)", f"{self.makespan_s:.0f} s" if self.makespan_s else "n/a"),
            ("wall time (start -> checks done)", f"{self.wall_s:.0f} s"),
            ("kills by kind", ", ".join(f"{k} {n}" for k, n in self.kills_by_kind.items())),
            ("clears (REST calls / task instances)", f"{self.clears} / {self.cleared_task_instances}"),
            ("cleared after stuck in queued", _short(self.stuck_queued)),
            (
                "components that died on their own",
                ", ".join(f"{k} {n}" for k, n in self.died_on_their_own.items()) or "none",
            ),
            (
                "downstream tasks created",
                ", ".join(f"{k} {v}" for k, v in sorted(self.tasks_created.items())),
            ),
        ]
        for kill in self.kills:
            back = f"back in {kill.recovered_s:.0f} s" if kill.recovered_s is not None else "not back"
            restarted = f", {kill.restarted} restarted, {back}" if kill.restarted else ""
            rows.append(
                (
                    f"  kill @ {kill.at_s:5.0f} s ({100 * kill.progress:3.0f}%)",
                    f"{kill.kind}: {kill.what}{restarted}",
                )
            )
        rows += [(("PASS  " if ok else "FAIL  ") + name, detail) for name, ok, detail in self.criteria()]
        width = max(len(k) for k, _ in rows)
        line = "=" * min(110, width + 2 + max(len(v) for _, v in rows))
        return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kills_by_kind"] = self.kills_by_kind
        data["criteria"] = [{"criterion": n, "passed": ok, "detail": d} for n, ok, d in self.criteria()]
        data["passed"] = self.passed
        return data


def _short(items: Sequence[str] | Mapping[str, str], limit: int = 6) -> str:
    if not items:
        return "none"
    texts = [f"{k} ({v})" for k, v in items.items()] if isinstance(items, Mapping) else list(items)
    more = f" ... and {len(texts) - limit} more" if len(texts) > limit else ""
    return "; ".join(texts[:limit]) + more


def _counted(count: int, details: list[dict[str, Any]]) -> str:
    if count < 0:
        return "not read"
    return str(count) + (f": {json.dumps(details[:3])[:300]}" if details else "")


# ============================================================== processes


@dataclass(frozen=True)
class Proc:
    """A live process of one of our sessions; `title` is its command line as it shows it
    (Airflow's children rename themselves)."""

    pid: int
    ppid: int
    sid: int
    title: str

    @property
    def words(self) -> list[str]:
        return self.title.split()

    def is_(self, component: str) -> bool:
        """An `airflow <component>` main process (`python .../airflow scheduler`)."""
        words = self.words
        return len(words) >= 2 and words[-1] == component and words[-2].endswith("airflow")

    @property
    def is_worker(self) -> bool:
        return self.title.startswith("airflow worker -- LocalExecutor")

    @property
    def is_idle_worker(self) -> bool:
        return self.is_worker and "<idle>" in self.title

    @property
    def is_task(self) -> bool:
        return self.title.startswith("airflow worker -- ") and not self.is_worker

    @property
    def is_log_server(self) -> bool:
        return self.title.startswith("airflow serve-logs")


def processes(sessions: set[int]) -> list[Proc]:
    """Every live (not zombie) process of these sessions, from /proc."""
    found: list[Proc] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            if fields[0] == "Z" or int(fields[3]) not in sessions:
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        found.append(Proc(pid=int(entry.name), ppid=int(fields[1]), sid=int(fields[3]), title=title))
    return found


def tree(procs: Sequence[Proc], root: int) -> list[Proc]:
    """`root` and its descendants among `procs`."""
    by_parent: dict[int, list[Proc]] = {}
    for p in procs:
        by_parent.setdefault(p.ppid, []).append(p)
    out = [p for p in procs if p.pid == root]
    todo = [root]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            out.append(child)
            todo.append(child.pid)
    return out


def kill9(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_sessions(sessions: set[int]) -> None:
    """SIGKILL whatever is left of our sessions, until nothing is (new children may appear)."""
    for _ in range(20):
        left = processes(sessions)
        if not left:
            return
        kill9([p.pid for p in left])
        time.sleep(0.2)


@dataclass
class Deployment:
    """`airflow standalone` plus the components restarted beside it, all in sessions we own.

    A component killed under standalone stays dead (standalone never restarts one), so a
    restart is a new process group of its own on the same AIRFLOW_HOME and environment."""

    local: LocalAirflow
    groups: list[Group] = field(default_factory=list)
    restarts: Counter[str] = field(default_factory=Counter)

    @property
    def sessions(self) -> set[int]:
        return {g.pid for g in self.groups}

    def start(self) -> AirflowRest:
        self.local.prepare()
        self.groups.append(self.local.start_standalone())
        rest = AirflowRest(f"http://localhost:{self.local.api_port}", "admin", self.local.password())
        try:
            rest.wait_ready()
            rest.login()
        except Exception:
            print(self.groups[0].log_tail(80), file=sys.stderr)
            raise
        return rest

    def procs(self) -> list[Proc]:
        return processes(self.sessions)

    def restart(self, component: str) -> None:
        self.restarts[component] += 1
        n = self.restarts[component]
        self.groups.append(
            start_group(
                f"{component}-{n}",
                [str(venv_bin() / "airflow"), component],
                env=self.local.env(),
                log_path=self.local.home / "logs" / f"{component}-restart-{n}.log",
            )
        )

    def dead_components(self) -> list[str]:
        """Components with no live main process left that the soak did not just kill (it
        restarts those itself): one that died on its own, e.g. a triggerer that met SQLite's
        "database is locked". An operator restarts it; so does the soak, and reports it."""
        procs = self.procs()
        alive = {c for c in COMPONENTS if any(p.is_(c) for p in procs)}
        if any(p.title.startswith("airflow api_server") for p in procs):
            alive.add("api-server")
        return [c for c in COMPONENTS if c not in alive]

    def reap_orphan_workers(self) -> int:
        """Kill idle LocalExecutor workers whose scheduler is dead: nothing can hand them work
        any more (housekeeping; a busy one finishes its task first)."""
        procs = self.procs()
        schedulers = {p.pid for p in procs if p.is_("scheduler")}
        idle = [p.pid for p in procs if p.is_idle_worker and p.ppid not in schedulers]
        kill9(idle)
        return len(idle)

    def stop(self) -> None:
        sessions = self.sessions
        for group in reversed(self.groups):
            group.stop(timeout=5)
        kill_sessions(sessions)


# ============================================================== the run


@dataclass
class _Plan:
    """What the soak derives from its settings before starting anything."""

    time_scale: float
    fleet_size: int
    cohort: list[str]
    hosts: dict[str, int]
    gap_s: tuple[float, float]
    floor_s: float


def kill_kinds(seed: int, kinds: Sequence[KillKind]) -> Iterator[KillKind]:
    """The kinds to kill, in order: a seeded deck, so that every len(kinds) kills in a row
    hold each kind once (a plain random choice may never pick one in 10 draws)."""
    rng = random.Random(f"soak-kinds-{seed}")
    while True:
        yield from rng.sample(list(kinds), len(kinds))


def plan_soak(settings: SoakSettings) -> _Plan:
    """Fleet, cohort, time scale and kill gaps, from the seeded fleet (no process started)."""
    from rce_lib.devenv.bench import fleet_size_for, lower_bound
    from rce_lib.sim.config import DEFAULT_DURATIONS, DEFAULT_RELEASES
    from rce_lib.sim.fleet import generate_fleet

    size = fleet_size_for(settings.sddcs)
    fleet = [
        s for s in generate_fleet(settings.fleet_seed, size, DEFAULT_RELEASES) if s.version == SOURCE_VERSION
    ]
    cohort = sorted(s.id for s in fleet)[: settings.sddcs]
    shapes = []
    for sddc in fleet:
        if sddc.id in cohort:
            per_cluster = Counter(h.cluster_id for h in sddc.hosts)
            shapes.append(sorted(per_cluster.values(), reverse=True))
    durations = {**DEFAULT_DURATIONS, **DURATIONS_S}
    pools = json.loads((REPO_ROOT / "include" / "pools.json").read_text())
    slots = {
        "vcenter": pools["rce_vcenter"]["slots"],
        "nsx": pools["rce_nsx"]["slots"],
        "esx": pools["rce_esx"]["slots"],
    }
    floor_sim = lower_bound(shapes, durations, slots).engine_bound_s
    time_scale = settings.time_scale or DEFAULT_TIME_SCALE
    if settings.minutes is not None and settings.time_scale is None:
        # the downstream work alone lasts about `minutes`; Airflow's own pace adds to it
        time_scale = min(DEFAULT_TIME_SCALE, max(1.0, floor_sim / (settings.minutes * 60)))
    gap = settings.gap_s or DEFAULT_GAP_S
    if settings.minutes is not None and settings.gap_s is None:
        mean = settings.minutes * 60 * PROGRESS_SPAN / (settings.kills + 1)
        gap = (max(5.0, 0.5 * mean), max(5.0, 1.5 * mean))
    hosts = {s.id: len(s.hosts) for s in fleet if s.id in cohort}
    return _Plan(time_scale, size, cohort, hosts, gap, floor_sim / time_scale)


def _write_inputs(home: Path, settings: SoakSettings, plan: _Plan) -> tuple[Path, Path]:
    sim_cfg = {"seed": settings.fleet_seed, "size": plan.fleet_size, "durations_s": DURATIONS_S}
    sim_path = home / "sim-config.yaml"
    sim_path.write_text(yaml.safe_dump(sim_cfg, sort_keys=False))
    rollout = {
        "rollout": f"soak-{settings.seed}",
        "release": TARGET_VERSION,
        "defaults": {
            "max_parallel": settings.sddcs,
            # infrastructure failures must never stop the wave: the criteria judge the end state
            "max_fail_percentage": 100,
            "bake_seconds": 0,
            "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
        },
        # the whole fleet: the SDDCs at 1.24.0 (no path) and 1.26.0 are excluded with a reason
        "waves": [{"name": WAVE, "selector": {}, "size": "100%", "canary_size": 0}],
    }
    plan_path = home / "rollout-soak.yaml"
    plan_path.write_text(yaml.safe_dump(rollout, sort_keys=False))
    return sim_path, plan_path


class Soak:
    """One soak run; use `run()` (which always stops every process it started)."""

    def __init__(self, settings: SoakSettings) -> None:
        settings.validate()
        self.settings = settings
        self.plan = plan_soak(settings)
        self.rng = random.Random(settings.seed)
        self.log = settings.log
        self.sim_group: Group | None = None
        self.sim_url = ""
        self.deployment: Deployment | None = None
        self.rest: AirflowRest | None = None
        self.result = SoakResult(
            settings={
                "sddcs": settings.sddcs,
                "kills": settings.kills,
                "seed": settings.seed,
                "fleet_seed": settings.fleet_seed,
                "time_scale": self.plan.time_scale,
                "minutes": settings.minutes,
                "kinds": list(settings.kinds),
                "gap_s": list(self.plan.gap_s),
                "fleet_size": self.plan.fleet_size,
                "hosts": sum(self.plan.hosts.values()),
                "downstream_floor_s": round(self.plan.floor_s, 1),
                "home": str(settings.home),
            },
        )
        self._sim = requests.Session()
        self._sim.trust_env = False
        self._sim.headers["Authorization"] = f"Bearer {SIM_TOKEN}"

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> SoakResult:
        began = time.monotonic()
        try:
            self._run()
        except KeyboardInterrupt:
            self.result.error = "interrupted"
            raise
        except Exception as err:
            self.result.error = f"{type(err).__name__}: {str(err)[:400]}"
            self.log(f"soak: {self.result.error}")
        finally:
            self.result.wall_s = time.monotonic() - began
            self.stop()
        return self.result

    def stop(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()
        if self.sim_group is not None:
            self.sim_group.stop(timeout=5)
            kill_sessions({self.sim_group.pid})
        self._sim.close()

    def _run(self) -> None:
        from rce_lib.devenv.demo import start_simulator

        s, home = self.settings, self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        sim_path, plan_path = _write_inputs(home, s, self.plan)
        self.log(
            f"soak: {s.sddcs} SDDCs, {s.kills} kills (seed {s.seed}), time scale {self.plan.time_scale:g}, "
            f"AIRFLOW_HOME={home}"
        )
        self.sim_group, self.sim_url = start_simulator(
            home, size=self.plan.fleet_size, time_scale=self.plan.time_scale, token=SIM_TOKEN, config=sim_path
        )
        before = {x["id"]: x for x in self._sim_get("/sim/state")["sddcs"]}
        local = LocalAirflow(
            home=home,
            sim_url=self.sim_url,
            sim_token=SIM_TOKEN,
            extra_env={
                **AIRFLOW_ENV,
                "RCE_ROLLOUT_PLAN": str(plan_path),
                **({"RCE_PHASES_IN_TRIGGERER": "off"} if s.phases_on_workers else {}),
            },
        )
        self.deployment = Deployment(local)
        self.log("soak: starting airflow standalone ...")
        rest = self.rest = self.deployment.start()
        rest.wait_for_dag(DAG_ID, timeout=300)
        rest.unpause(DAG_ID)
        t_trigger, wall_trigger = time.monotonic(), time.time()
        run_id = self.result.run_id = rest.trigger(DAG_ID, {"target_version": TARGET_VERSION})
        self.log(f"soak: triggered {DAG_ID} run {run_id}")
        deadline = t_trigger + s.timeout_s
        self._kill_loop(run_id, t_trigger, deadline)
        state = self._operate_until_done(run_id, deadline)
        self.result.run_state = state
        if state not in ("success", "failed"):
            with contextlib.suppress(RuntimeError, OSError):
                self.result.unfinished = self._unfinished(run_id)
        run = _patient(lambda: rest.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}"))
        end = _iso(run.get("end_date"))  # its start_date moves when a clear restarts an ended run
        if end is not None and state == "success":
            self.result.makespan_s = end - wall_trigger
        self.log(f"soak: run {state}; checking the fleet, the counters and the ledger ...")
        self._check(before, run_id)

    # ------------------------------------------------------------------ kills

    def _kill_loop(self, run_id: str, t_trigger: float, deadline: float) -> None:
        """Kill until `kills` kills landed (or the run ended), in the order of `kill_kinds`."""
        s = self.settings
        self._wait_for(lambda: self._sim_progress()[1] > 0, run_id, deadline)  # downstream work began
        last = time.monotonic()
        kinds = iter(kill_kinds(s.seed, s.kinds))
        misses = 0
        while len(self.result.kills) < s.kills and misses <= s.kills:
            wanted = next(kinds)
            gap = self.rng.uniform(*self.plan.gap_s)
            threshold = PROGRESS_SPAN * (len(self.result.kills) + 1) / (s.kills + 1)

            def due(gap: float = gap, threshold: float = threshold, since: float = last) -> bool:
                return time.monotonic() - since >= gap or self._sim_progress()[0] >= threshold

            if self._wait_for(due, run_id, deadline):
                self.log(f"soak: the run ended after {len(self.result.kills)} of {s.kills} kills")
                return
            kill = self._kill(wanted, time.monotonic() - t_trigger, run_id)
            if kill is None:
                misses += 1
                continue
            self.result.kills.append(kill)
            instead = f" (no {wanted} to kill)" if kill.kind != wanted else ""
            self.log(
                f"soak: kill {len(self.result.kills)}/{s.kills} at {kill.at_s:.0f} s "
                f"({100 * kill.progress:.0f}% done): {kill.kind}{instead} {kill.what}"
            )
            if kill.kind in RESTARTED:
                time.sleep(self.rng.uniform(1.0, 4.0))  # an operator notices
                self._restart(kill, run_id)
            last = time.monotonic()

    def _kill(self, wanted: KillKind, at_s: float, run_id: str) -> Kill | None:
        """Kill one `wanted` component, waiting for one (a busy worker, a task: while every
        SDDC waits deferred there is none) up to the longest gap between kills, at least 15 s;
        then one of the other kinds, in a seeded order. None if nothing could be killed."""
        assert self.deployment is not None
        others = [k for k in self.settings.kinds if k != wanted]
        order = [wanted, *self.rng.sample(others, len(others))]
        patient = int(max(15.0, self.plan.gap_s[1]) / 0.5)
        labels: dict[str, str] = {}
        for attempt in range(patient + 10):
            if wanted in ("worker", "task") and attempt % 10 == 0:
                # a task instance gets a new id per try: name them before the kill makes a new one
                labels = self._ti_labels(run_id)
            procs = self.deployment.procs()
            for kind in order if attempt >= patient else [wanted]:
                victims = self._victims(kind, procs)
                if victims:
                    main = victims[0]
                    kill9([p.pid for p in victims])
                    progress, _ = self._sim_progress()
                    what = f"pid {main.pid} `{main.title[:60]}`"
                    if kind in ("worker", "task"):
                        what += f" = {labels.get(main.title.rsplit(' ', 1)[-1], '?')}"
                    if len(victims) > 1:
                        what += f" (+{len(victims) - 1} of its processes)"
                    return Kill(at_s, kind, [p.pid for p in victims], what, wanted, progress)
            time.sleep(0.5)
        self.log(f"soak: nothing to kill (wanted {wanted})")
        return None

    def _ti_labels(self, run_id: str) -> dict[str, str]:
        """Task instance id -> the task instance as the grid shows it (its current try)."""
        assert self.rest is not None
        try:
            tis = self.rest.task_instances(DAG_ID, run_id)
        except (RuntimeError, OSError):
            return {}
        return {
            str(ti["id"]): f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}] "
            f"try {ti.get('try_number')}"
            for ti in tis
        }

    def _victims(self, kind: KillKind, procs: list[Proc]) -> list[Proc]:
        """What one kill of `kind` takes down; the first is the one chosen (module doc)."""
        if kind in ("worker", "task"):
            busy = sorted(
                (p for p in procs if (p.is_task if kind == "task" else p.is_worker and not p.is_idle_worker)),
                key=lambda p: p.pid,
            )
            return [self.rng.choice(busy)] if busy else []
        mains = [p for p in procs if p.is_(kind) and not any(q.pid == p.ppid and q.is_(kind) for q in procs)]
        if not mains:
            return []
        main = mains[0]
        family = tree(procs, main.pid)
        if kind == "triggerer":
            return family
        return [main, *(p for p in family if p.ppid == main.pid and (p.is_log_server or p.is_idle_worker))]

    def _restart(self, kill: Kill, run_id: str) -> None:
        assert self.deployment is not None and self.rest is not None
        component = RESTARTED[kill.kind]
        started = time.monotonic()
        since = datetime.now(UTC)
        self.deployment.restart(component)
        kill.restarted = component
        key = {"scheduler": "latest_scheduler_heartbeat", "triggerer": "latest_triggerer_heartbeat"}[
            component
        ]
        rest = self.rest

        def healthy() -> bool:
            health = _patient(lambda: rest.request("GET", "/monitor/health"))
            part = health.get(component) or {}
            beat = _iso(part.get(key))
            return part.get("status") == "healthy" and beat is not None and beat > since.timestamp()

        self._wait_for(healthy, run_id, time.monotonic() + 180, stop_when_ended=False)
        if healthy():
            kill.recovered_s = time.monotonic() - started
            self.log(f"soak: {component} back after {kill.recovered_s:.0f} s")
        else:
            self.log(f"soak: {component} still not healthy 180 s after its restart")

    # ------------------------------------------------------------------ the operator

    def _wait_for(
        self, done: Callable[[], bool], run_id: str, deadline: float, *, stop_when_ended: bool = True
    ) -> bool:
        """Operate (clear what failed, reap orphans) until `done()` or the deadline; True if the
        run ended first: succeeded (no failed task instance left), or failed with nothing
        left to clear for a minute (no operator can help it then)."""
        failed_looks = 0
        while time.monotonic() < deadline:
            state = self._operate(run_id)
            failed_looks = failed_looks + 1 if state == "failed" else 0
            if stop_when_ended and (state == "success" or failed_looks >= 20):
                return True
            if done():
                return False
            time.sleep(3.0)
        return False

    def _operate(self, run_id: str) -> str:
        """One look at the grid, as an operator would, then the run's state ("cleared" when
        something was cleared). Never clears anything that succeeded or runs:

        * failed task instances, with their failed or upstream-failed downstream
          (`only_failed`), so the SDDC's group resumes from the phase that failed;
        * task instances waiting for a retry (a killed worker's or task's), alone, so they
          run now instead of after the retry delay; `prevent_running_task` makes the API
          refuse (409) if one started meanwhile, and the next look tries again."""
        assert self.rest is not None and self.deployment is not None
        self.deployment.reap_orphan_workers()
        for component in self.deployment.dead_components():
            self.log(f"soak: {component} died on its own: restarting it")
            self.result.died_on_their_own[component] = self.result.died_on_their_own.get(component, 0) + 1
            self.deployment.restart(component)
        try:
            tis = self._task_instances(run_id, ["failed", "upstream_failed", "up_for_retry", "queued"])
            failed = [ti for ti in tis if ti.get("state") in ("failed", "upstream_failed")]
            waiting = [ti for ti in tis if ti.get("state") == "up_for_retry"] + self._stuck_in_queued(tis)
            if failed:
                self._clear(run_id, failed, only_failed=True, downstream=True)
            if waiting:
                self._clear(run_id, waiting, only_failed=False, downstream=False)
            if failed or waiting:
                return "cleared"
            return self.rest.run_state(DAG_ID, run_id)
        except (RuntimeError, OSError) as err:  # the api-server is busy or restarting: look again
            self.log(f"soak: (Airflow API: {str(err)[:160]})")
            return "unknown"

    def _task_instances(self, run_id: str, states: list[str]) -> list[dict[str, Any]]:
        """The run's task instances in `states` (one page of 100: the soak's waves are smaller)."""
        assert self.rest is not None
        page = self.rest.request(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
            params={"state": states, "limit": 100},
        )
        return list(page.get("task_instances", []))

    def _stuck_in_queued(self, tis: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of `tis`, those queued longer than QUEUED_PATIENCE_S: their LocalExecutor worker died
        after taking them and before starting them. Nothing else ever runs them (the executor
        cannot revoke, so `task_queued_timeout` skips them); the runbook says to clear them."""
        now = time.time()
        stuck = [
            ti
            for ti in tis
            if ti.get("state") == "queued"
            and (queued := _iso(ti.get("queued_when"))) is not None
            and now - queued > QUEUED_PATIENCE_S
        ]
        self.result.stuck_queued += [_ti_label(ti) for ti in stuck]
        return stuck

    def _unfinished(self, run_id: str) -> list[str]:
        """The run's task instances in no end state, with the trigger of the deferred ones."""
        out = []
        states = ["queued", "running", "deferred", "scheduled", "up_for_retry", "restarting"]
        for ti in self._task_instances(run_id, states):
            trigger = (ti.get("trigger") or {}).get("classpath", "")
            out.append(
                f"{_ti_label(ti)}={ti.get('state')}"
                + (f" on {trigger.rsplit('.', 1)[-1]}" if trigger else "")
            )
        return out

    def _clear(self, run_id: str, tis: list[dict[str, Any]], *, only_failed: bool, downstream: bool) -> None:
        assert self.rest is not None
        task_ids: list[Any] = [
            [ti["task_id"], ti["map_index"]] if int(ti.get("map_index", -1)) >= 0 else ti["task_id"]
            for ti in tis
        ]
        cleared = self.rest.request(
            "POST",
            f"/dags/{DAG_ID}/clearTaskInstances",
            json={
                "dry_run": False,  # the API's default is a dry run
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "only_failed": only_failed,
                "include_downstream": downstream,
                "reset_dag_runs": True,
                "prevent_running_task": True,
            },
        )
        self.result.clears += 1
        self.result.cleared_task_instances += len((cleared or {}).get("task_instances", []))
        labels = ", ".join(f"{_ti_label(ti)}={ti['state']}" for ti in tis)
        self.log(f"soak: cleared {labels}")

    def _operate_until_done(self, run_id: str, deadline: float) -> str:
        self._wait_for(lambda: False, run_id, deadline)
        assert self.rest is not None
        rest = self.rest
        return _patient(lambda: rest.run_state(DAG_ID, run_id))

    # ------------------------------------------------------------------ the simulator

    def _sim_get(self, path: str) -> Any:
        resp = self._sim.get(f"{self.sim_url}{path}", timeout=30)
        resp.raise_for_status()
        return resp.json()

    def _sim_progress(self) -> tuple[float, int]:
        """(share of the cohort's components and hosts at the target, downstream tasks created)."""
        try:
            state = self._sim_get("/sim/state")
        except (requests.RequestException, ValueError):
            return 0.0, 0
        release = _release(state, TARGET_VERSION)
        cohort = set(self.plan.cohort)
        done = 0.0
        for sddc in state["sddcs"]:
            if sddc["id"] not in cohort:
                continue
            hosts = sddc["hosts"]
            at = sum(1 for h in hosts if h["version"] == release["esx"]) / max(1, len(hosts))
            done += (
                (sddc["components"]["vcenter"] == release["vcenter"])
                + (sddc["components"]["nsx"] == release["nsx"])
                + at
            )
        return done / (3 * max(1, len(cohort))), int(state["task_count"])

    # ------------------------------------------------------------------ the criteria

    def _check(self, before: Mapping[str, Any], run_id: str) -> None:
        r = self.result
        state = self._sim_get("/sim/state")
        counters = self._sim_get("/sim/counters")
        release = _release(state, TARGET_VERSION)
        fleet = {x["id"]: x for x in state["sddcs"]}
        r.cohort = list(self.plan.cohort)
        for sddc_id in r.cohort:
            sddc = fleet[sddc_id]
            off = [h["id"] for h in sddc["hosts"] if h["version"] != release["esx"]]
            if (
                sddc["version"] != TARGET_VERSION
                or sddc["components"]
                != {
                    "vcenter": release["vcenter"],
                    "nsx": release["nsx"],
                }
                or off
            ):
                r.not_at_target[sddc_id] = f"{sddc['version']}, {len(off)} host(s) behind"
        r.untouched_changed = [
            i for i, x in before.items() if i not in self.plan.cohort and fleet[i]["version"] != x["version"]
        ]
        r.duplicate_starts = int(counters["duplicate_starts"]["count"])
        r.duplicate_details = list(counters["duplicate_starts"]["details"])
        r.retry_after_violations = int(counters["retry_after_violations"]["count"])
        r.violation_details = list(counters["retry_after_violations"]["details"])
        r.tasks_created = dict(counters.get("tasks_created", {}))
        hosts = [h for x in state["sddcs"] for h in x["hosts"]]
        r.hosts_in_maintenance = [h["id"] for h in hosts if h["state"] == "MAINTENANCE"]
        r.hosts_not_connected = [h["id"] for h in hosts if h["state"] != "CONNECTED"]
        r.active_tasks_left = [f"{t['type']} {t['id']} on {t['sddc_id']}" for t in state["active_tasks"]]
        r.started_twice = [
            line for sddc_id in r.cohort for line in started_twice(sddc_id, self._sddc_tasks(sddc_id))
        ]
        self._check_ledger(run_id)

    def _sddc_tasks(self, sddc_id: str) -> list[dict[str, Any]]:
        return list(self._sim_get(f"/api/v1/sddcs/{sddc_id}/tasks?limit=200").get("items", []))

    def _check_ledger(self, run_id: str) -> None:
        """Every cohort SDDC's ledger record succeeded, and a dry-run reconcile sweep over every
        SDDC the ledger knows (the fleet sweep's rules, writing nothing) finds no drift."""
        from rce_lib.ledger import Ledger
        from rce_lib.ledger.models import Phase, Status

        assert self.deployment is not None
        ledger = Ledger(f"sqlite:///{self.deployment.local.home / 'rce_ledger.db'}")
        rows = {p.sddc_id: p for p in ledger.list_progress(rollout=f"soak-{self.settings.seed}", wave=WAVE)}
        resolved = ledger.events(rollout=f"soak-{self.settings.seed}", wave=WAVE, kinds=["cohort_resolved"])
        if resolved:
            self.result.excluded = {
                str(x["sddc_id"]): str(x["reason"]) for x in resolved[-1].data.get("excluded", [])
            }
        for sddc_id in self.result.cohort:
            row = rows.get(sddc_id)
            if row is None:
                self.result.ledger_not_done[sddc_id] = "no record"
            elif (row.status, row.phase) != (Status.SUCCEEDED, Phase.DONE):
                self.result.ledger_not_done[sddc_id] = f"{row.phase.value}/{row.status.value}"
        self.result.drift = reconcile_dry_run(ledger, self.sim_url, SIM_TOKEN, self._run_state)

    def _run_state(self, wave: str, run_id: str) -> Any:
        from rce_lib.reconcile.drift import RunState

        assert self.rest is not None
        try:
            state = self.rest.run_state(f"rce_wave_{wave}", run_id)
        except (RuntimeError, OSError):
            return RunState.UNKNOWN
        return RunState.RUNNING if state in ("queued", "running") else RunState.ENDED


# How often one SDDC's upgrade starts each downstream step (per host for host steps).
ONCE: dict[str, int] = {
    "PRECHECK": 1,
    "SNAPSHOT": 1,
    "UPGRADE_VCENTER": 1,
    "UPGRADE_NSX": 1,
    "UPGRADE_HOST": 1,
    "HOST_MAINTENANCE": 2,
    "ROLLBACK": 0,
}


def started_twice(sddc_id: str, tasks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Downstream steps the simulator saw started more often than one upgrade needs: work
    done twice that its duplicate-start counter does not catch (a second snapshot, say, is
    no conflict for the API). Every step of a clean upgrade is started exactly once."""
    seen = Counter((str(t["type"]), str(t.get("host_id") or "")) for t in tasks)
    return [
        f"{sddc_id} {kind}{f' {host}' if host else ''} x{count}"
        for (kind, host), count in sorted(seen.items())
        if count > ONCE.get(kind, 1)
    ]


def reconcile_dry_run(
    ledger: Any,
    api_url: str,
    token: str,
    run_state_of: Callable[[str, str], Any],
    *,
    since_s: float = 86400.0,
) -> list[str]:
    """Every finding of a dry-run fleet sweep (rce_lib.reconcile, as the DAG `rce_reconcile`
    makes it, writing nothing) over the SDDCs the ledger touched lately, as text; also any
    SDDC that could not be judged."""
    from rce_lib.devenv.bench_baseline import sim_connection
    from rce_lib.hooks.sddc_api import SddcApiHook
    from rce_lib.reconcile.apply import Reconciler

    with sim_connection(api_url, token, conn_id="rce_soak_sddc_api") as conn_id:
        hook = SddcApiHook(sddc_api_conn_id=conn_id)
        try:
            reconciler = Reconciler(ledger, hook, by="soak", run_id="soak-check", dry_run=True)
            ids = ledger.sddc_ids_to_reconcile(updated_since=datetime.now(UTC) - timedelta(seconds=since_s))
            found: list[str] = []
            for sddc_id in ids:
                report = reconciler.sweep_sddc(sddc_id, run_state_of)
                if report.error:
                    found.append(f"{sddc_id}: not judged: {report.error}")
                found += [
                    f"{sddc_id}: {o.finding.kind.value} -> {o.outcome}: {o.finding.message}"
                    for o in report.outcomes
                ]
            return found
        finally:
            hook.close()


def _release(state: Mapping[str, Any], version: str) -> dict[str, str]:
    return dict(next(r for r in state["releases"] if r["version"] == version)["components"])


def _ti_label(ti: Mapping[str, Any]) -> str:
    return f"{ti['task_id']}[{ti.get('rendered_map_index') or ti['map_index']}]"


def _iso(ts: str | None) -> float | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _patient(call: Callable[[], T], tries: int = 12, pause: float = 5.0) -> T:
    """Retry a read of the Airflow API: under load (and while the scheduler restarts) the
    SQLite-backed api-server answers 500 or times out now and then."""
    for attempt in range(tries):
        try:
            return call()
        except (RuntimeError, OSError):  # requests' errors are OSErrors
            if attempt == tries - 1:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


# ============================================================== CLI


def register(subparsers: Any) -> None:
    soak = subparsers.add_parser(
        "soak",
        help="crash-resume soak: a wave under airflow standalone while components are killed with SIGKILL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    soak.add_argument("--sddcs", type=int, default=30, help="upgradable SDDCs in the wave (default 30)")
    soak.add_argument("--kills", type=int, default=10, help="kills during the wave, at least 1 (default 10)")
    soak.add_argument("--seed", type=int, default=1, help="seed of the kill schedule (default 1)")
    soak.add_argument("--fleet-seed", type=int, default=42, help="seed of the simulated fleet (default 42)")
    soak.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="long mode: slow the simulator so the downstream work lasts about this long, "
        "and spread the kills over it",
    )
    soak.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help=f"simulated seconds per real second (default {DEFAULT_TIME_SCALE:g})",
    )
    soak.add_argument(
        "--kinds",
        default=None,
        help=f"comma-separated kill kinds to draw from (default {','.join(TRIGGERER_KINDS)}; "
        f"with --phases-on-workers {','.join(KILL_KINDS)})",
    )
    soak.add_argument(
        "--phases-on-workers",
        action="store_true",
        help="run the phases on workers (RCE_PHASES_IN_TRIGGERER=off): worker and task kills hit them",
    )
    soak.add_argument(
        "--home", type=Path, default=None, help="fresh AIRFLOW_HOME (default var/soak/run-<time>)"
    )
    soak.add_argument("--timeout", type=float, default=None, help="give up on the wave after this (s)")
    soak.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    soak.set_defaults(func=run_soak_cli)


def run_soak_cli(args: argparse.Namespace) -> int:
    from rce_lib.cli import CommandError

    on_workers = bool(getattr(args, "phases_on_workers", False))
    default_kinds = KILL_KINDS if on_workers else TRIGGERER_KINDS
    raw_kinds = ",".join(default_kinds) if args.kinds is None else str(args.kinds)
    kinds = tuple(k.strip() for k in raw_kinds.split(",") if k.strip())
    timeout = args.timeout
    if timeout is None:
        timeout = max(900.0, 3 * 60 * (args.minutes or 0))
    try:
        settings = SoakSettings(
            home=Path("."),
            sddcs=args.sddcs,
            kills=args.kills,
            seed=args.seed,
            fleet_seed=args.fleet_seed,
            time_scale=args.time_scale,
            minutes=args.minutes,
            kinds=kinds,  # type: ignore[arg-type]  # validated just below
            phases_on_workers=on_workers,
            timeout_s=timeout,
            log=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True),
        )
        settings.validate()
    except SoakError as err:
        raise CommandError(str(err)) from None
    home = tool_home(args.home, tool="soak", label="run")
    settings = dataclasses.replace(settings, home=home)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = Soak(settings).run()
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped", file=sys.stderr)
        return 130
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    print()
    print(result.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str) + "\n")
        print(f"wrote {args.json}")
    print(f"logs: {home / 'logs'}")
    return 0 if result.passed else 1
