"""A real `airflow standalone` for integration tests.

`standalone_factory(sim, extra_env={...})` builds a `Standalone` (not started) on a
fresh AIRFLOW_HOME under tmp_path, wired to the simulator `sim`. Every process
group it starts is stopped at teardown, even when the test fails; the tail of
the standalone log is printed then (pytest shows it for failing tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from rce_lib.devenv.airflow_local import LocalAirflow
from rce_lib.devenv.airflow_rest import AirflowRest
from rce_lib.devenv.processes import Group, kill_listeners


class SimLike(Protocol):
    url: str
    token: str


@dataclass
class Standalone:
    """One AIRFLOW_HOME, started (and crashed, and restarted) as `airflow standalone`."""

    local: LocalAirflow
    groups: list[Group] = field(default_factory=list)
    rest: AirflowRest | None = None
    prepared: bool = False

    @property
    def home(self) -> Path:
        return self.local.home

    @property
    def group(self) -> Group:
        return self.groups[-1]

    def start(self, timeout: float = 240) -> AirflowRest:
        """Migrate once, start standalone, wait for the API and log in with the generated password."""
        if not self.prepared:
            self.local.prepare()
            self.prepared = True
        self.groups.append(self.local.start_standalone())
        rest = AirflowRest(f"http://localhost:{self.local.api_port}", "admin", self.local.password())
        try:
            rest.wait_ready(timeout=timeout)
            rest.login()
        except Exception:
            print(self.group.log_tail(80))
            raise
        self.rest = rest
        return rest

    def kill9(self) -> None:
        """Crash every component at once: scheduler, dag-processor, triggerer, api-server, workers."""
        self.group.kill9()

    def stop(self) -> None:
        for group in reversed(self.groups):
            group.stop()
        kill_listeners(self.local.api_port)


StandaloneFactory = Callable[..., Standalone]


@pytest.fixture
def standalone_factory(tmp_path: Path) -> Iterator[StandaloneFactory]:
    made: list[Standalone] = []

    def make(sim: SimLike, *, extra_env: dict[str, str] | None = None) -> Standalone:
        local = LocalAirflow(
            home=tmp_path / f"airflow-{len(made)}",
            sim_url=sim.url,
            sim_token=sim.token,
            extra_env=dict(extra_env or {}),
        )
        standalone = Standalone(local=local)
        made.append(standalone)
        return standalone

    yield make
    for standalone in made:
        if standalone.groups:
            print(f"--- {standalone.group.log_path} (tail)\n{standalone.group.log_tail(120)}")
        standalone.stop()
