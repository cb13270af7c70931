"""Shared fixtures. The simulator runs as a REAL process (`rce sim serve --port 0`),
started in its own session and killed by process group at teardown.

Fixtures:
  sim_factory(size=6, time_scale=6000, seed=42, config=None, state_dir=None, token="sim-token")
      -> SimServer; starts a fresh simulator per call, all stopped at test end.
  module_sim_factory(...) -> the same, scope="module", for fixtures shared by a module's tests.
  sim_server -> SimServer; one shared simulator per test session (size 24, time scale 6000),
      with faults reset and counters zeroed before each test. The fleet itself is shared:
      tests should pick SDDCs nobody else mutates, or use sim_factory for a fresh fleet.

SimServer: .url .token .state_dir .proc; .request(method, path, json=, headers=, key=)
-> httpx.Response; .counters() .faults(**kw) .reset_faults() .drift(**kw) .state()
.reset_counters() .sddc(id) .set_window(id, window|None) .wait_task(task_id) .kill(sig) .restart().
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RCE = REPO / ".venv" / "bin" / "rce"
READY_PREFIX = "rce-sim listening on "


@dataclass
class SimServer:
    """A running simulator process and a small client for it."""

    args: list[str]
    state_dir: Path
    token: str
    url: str = ""
    proc: subprocess.Popen[str] | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    stderr: list[str] = field(default_factory=list)

    # ---- process
    def start(self, timeout: float = 20.0) -> SimServer:
        self.proc = subprocess.Popen(
            [*self.args, "--state-dir", str(self.state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = _read_line(self.proc, timeout)
        if not line.startswith(READY_PREFIX):
            self.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line[len(READY_PREFIX) :].strip()
        assert self.proc.stderr is not None
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()  # type: ignore[union-attr,arg-type]
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()

    def restart(self) -> SimServer:
        """Kill -9 and start again on the same state dir (a new port)."""
        self.kill(signal.SIGKILL)
        return self.start()

    # ---- HTTP
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        hdrs = {"Authorization": f"Bearer {self.token if token is None else token}"}
        if key is not None:
            hdrs["Idempotency-Key"] = key
        hdrs.update(headers or {})
        return self.client.request(method, self.url + path, json=json, headers=hdrs)

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.request(method, path, json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def counters(self) -> dict[str, Any]:
        return self._ok("GET", "/sim/counters")  # type: ignore[no-any-return]

    def reset_counters(self) -> dict[str, Any]:
        return self._ok("POST", "/sim/reset-counters")  # type: ignore[no-any-return]

    def faults(self, **kw: Any) -> dict[str, Any]:
        return self._ok("POST", "/sim/faults", kw)  # type: ignore[no-any-return]

    def reset_faults(self) -> dict[str, Any]:
        return self._ok("DELETE", "/sim/faults")  # type: ignore[no-any-return]

    def drift(self, **kw: Any) -> dict[str, Any]:
        return self._ok("POST", "/sim/drift", kw)  # type: ignore[no-any-return]

    def set_window(self, sddc_id: str, window: dict[str, int] | None) -> dict[str, Any]:
        """Set (None: clear) an SDDC's maintenance window; answers the SDDC."""
        body = {"maintenance_window": window}
        return self._ok("POST", f"/sim/sddcs/{sddc_id}/maintenance_window", body)  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return self._ok("GET", "/sim/state")  # type: ignore[no-any-return]

    def sddc(self, sddc_id: str) -> dict[str, Any]:
        return self._ok("GET", f"/api/v1/sddcs/{sddc_id}")  # type: ignore[no-any-return]

    def wait_task(self, task_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the task is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            task = self._ok("GET", f"/api/v1/tasks/{task_id}")
            if task["status"] in ("SUCCEEDED", "FAILED", "CANCELED"):
                return task  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} not terminal: {task}")
            time.sleep(0.02)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """First stdout line, or '' after timeout / exit."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def _args(size: int, time_scale: float, seed: int, token: str, config_path: Path | None) -> list[str]:
    args = [
        str(RCE),
        "sim",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--seed",
        str(seed),
        "--size",
        str(size),
        "--time-scale",
        str(time_scale),
        "--token",
        token,
    ]
    if config_path is not None:
        args += ["--config", str(config_path)]
    return args


SimFactory = Callable[..., SimServer]


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[SimFactory]:
    """Start fresh simulators: sim_factory(size=6, time_scale=6000, seed=42, config={...})."""
    started: list[SimServer] = []

    def make(
        size: int = 6,
        time_scale: float = 6000,
        seed: int = 42,
        config: dict[str, Any] | None = None,
        state_dir: Path | None = None,
        token: str = "sim-token",
    ) -> SimServer:
        n = len(started)
        config_path = None
        if config:
            config_path = tmp_path / f"sim-config-{n}.yaml"
            config_path.write_text(yaml.safe_dump(config))
        server = SimServer(
            args=_args(size, time_scale, seed, token, config_path),
            state_dir=state_dir or tmp_path / f"sim-state-{n}",
            token=token,
        )
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill()
        server.client.close()


@pytest.fixture(scope="session")
def _shared_sim() -> Iterator[SimServer]:
    with tempfile.TemporaryDirectory(prefix="rce-sim-") as tmp:
        server = SimServer(
            args=_args(24, 6000, 42, "sim-token", None), state_dir=Path(tmp) / "state", token="sim-token"
        )
        server.start()
        yield server
        server.kill()
        server.client.close()


@pytest.fixture
def sim_server(_shared_sim: SimServer) -> SimServer:
    """The shared simulator with faults cleared and counters zeroed."""
    if _shared_sim.proc is None or _shared_sim.proc.poll() is not None:
        _shared_sim.start()
    _shared_sim.reset_faults()
    _shared_sim.reset_counters()
    return _shared_sim


@pytest.fixture(scope="module")
def module_sim_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimFactory]:
    """Like sim_factory, for module-scoped fixtures (one expensive run shared by several tests)."""
    base = tmp_path_factory.mktemp("module-sim")
    started: list[SimServer] = []

    def make(
        size: int = 6,
        time_scale: float = 6000,
        seed: int = 42,
        config: dict[str, Any] | None = None,
        token: str = "sim-token",
    ) -> SimServer:
        n = len(started)
        config_path = None
        if config:
            config_path = base / f"sim-config-{n}.yaml"
            config_path.write_text(yaml.safe_dump(config))
        server = SimServer(
            args=_args(size, time_scale, seed, token, config_path),
            state_dir=base / f"sim-state-{n}",
            token=token,
        )
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill()
        server.client.close()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh SQLite ledger that the tasks under test find (RCE_LEDGER_URL); directories
    with a ledger fixture of their own (tests/ledger: every backend) override it."""
    from rce_lib.airflow_support import ledger_conn
    from rce_lib.ledger import Ledger, dispose_engine

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("RCE_LEDGER_URL", url)
    ledger_conn._ledger_for.cache_clear()
    led = Ledger(url)
    led.ensure_schema()
    yield led
    ledger_conn._ledger_for.cache_clear()
    dispose_engine(url)


@pytest.fixture(autouse=True)
def _fresh_log_context() -> Iterator[None]:
    """Each test starts with no structlog context variables: a test that calls an operator's
    loop outside its task scope (which would restore them) must not leak fields into the next."""
    import structlog

    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def worker_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Phases resume on the worker after every wait (RCE_PHASES_IN_TRIGGERER=off): for the
    tests that drive the worker's own resumption step by step (rce_lib.triggers.phase)."""
    monkeypatch.setenv("RCE_PHASES_IN_TRIGGERER", "off")


@pytest.fixture
def in_forked_child() -> Callable[..., int]:
    """Run `target(*args)` in a forked child, as Airflow forks task processes and trigger
    runners; fails the test if the child is still running after 20 s. Returns its exit code."""
    import multiprocessing

    def run(target: Callable[..., Any], *args: Any) -> int:
        child = multiprocessing.get_context("fork").Process(target=target, args=args)
        child.start()
        child.join(20)
        stuck = child.is_alive()
        if stuck:
            child.kill()
        assert not stuck, f"the forked child running {target.__name__} hung"
        return int(child.exitcode or 0)

    return run
