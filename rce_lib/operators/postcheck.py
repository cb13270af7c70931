"""Postcheck: the SDDC is at the target, READY, every host connected, and healthy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rce_lib.api.models import HostState, Sddc, SddcStatus
from rce_lib.api.services import Service
from rce_lib.errors import Reason
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.state import at_target
from rce_lib.operators.steps import Done, Step


class PostcheckOperator(SddcPhaseOperator):
    """Verify the SDDC is at the target, READY, every host connected, and healthy."""

    phase = "postcheck"
    service = Service.VCENTER
    starts_downstream_work = False  # reads only
    template_fields: Sequence[str] = (
        *SddcPhaseOperator.template_fields,
        "max_error_rate",
        "max_p95_latency_ms",
    )

    def __init__(
        self,
        *,
        max_error_rate: float | str = 0.05,
        max_p95_latency_ms: float | str = 1000.0,
        health_checks: int = 3,
        health_interval_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_error_rate = max_error_rate
        self.max_p95_latency_ms = max_p95_latency_ms
        self.health_checks = health_checks
        self.health_interval_s = health_interval_s

    def next_step(self, run: PhaseRun, sddc: Sddc) -> Step:
        problems = self.problems(run, sddc)
        if not problems:
            return Done(f"{self.sddc_id} at {self.target_version}, READY and healthy")
        checks = run.count_event("postcheck_unhealthy") + 1
        run.event("postcheck_unhealthy", "; ".join(problems), {"check": checks})
        if checks < self.health_checks:
            self.wait(run, self.health_interval_s, f"postcheck {checks}/{self.health_checks}: {problems[0]}")
        self.fail(run, Reason.POSTCHECK_UNHEALTHY, "; ".join(problems))

    def problems(self, run: PhaseRun, sddc: Sddc) -> list[str]:
        problems: list[str] = []
        if not at_target(run, sddc) or sddc.version != self.target_version:
            problems.append(f"version is {sddc.version}, components not all at {self.target_version}")
        if sddc.status is not SddcStatus.READY:
            problems.append(f"status is {sddc.status.value}, not READY")
        down = [h.id for h in sddc.hosts if h.state is not HostState.CONNECTED]
        if down:
            problems.append(f"hosts not connected: {', '.join(down)}")
        health = run.hook.get_health(self.sddc_id)
        if health.error_rate > float(self.max_error_rate):
            problems.append(f"error rate {health.error_rate:.3f} > {float(self.max_error_rate):.3f}")
        if health.p95_latency_ms > float(self.max_p95_latency_ms):
            problems.append(
                f"p95 latency {health.p95_latency_ms:.0f} ms > {float(self.max_p95_latency_ms):.0f} ms"
            )
        return problems

    def on_done(self, run: PhaseRun, step: Done) -> Any:
        run.ledger_sddc_finished(step.message)
        return step.message
