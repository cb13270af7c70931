"""Disruptive phases (upgrade_vcenter, upgrade_nsx, upgrade_hosts) and maintenance windows.

With `respect_maintenance_windows`, such a phase starts only inside the SDDC's weekly
maintenance window, and only when its expected duration ends before the window closes
(rce_lib.plan.windows). Otherwise it waits deferred (MaintenanceWindowTrigger, no
worker slot) until the next opening where it fits, then decides again from fresh
reads: the customer may have moved the window meanwhile.

A phase already under way on the SDDC is never held back: stopping mid-way would
leave the SDDC half changed for a week. Under way means the real SDDC shows it (a
task of this phase running on it, or for the hosts phase a host already upgraded
or in maintenance). A phase with nothing left to do is not held back either.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast

from airflow.sdk import Context

from rce_lib.api.models import Sddc
from rce_lib.errors import ApiError
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun
from rce_lib.operators.steps import Done
from rce_lib.plan.model import DEFAULT_EXPECTED_PHASE_SECONDS, DISRUPTIVE_PHASES, DisruptivePhase
from rce_lib.plan.windows import (
    ExpectedDuration,
    MissingWindowPolicy,
    Refuse,
    StartNow,
    WaitUntil,
    describe,
    expected_duration,
    may_start,
)
from rce_lib.telemetry import log_context
from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger

WAITING_EVENT = "waiting_for_window"
#: Beyond the opening, how long the deferral may last before Airflow fails it (a lost trigger);
#: the retry then decides again.
DEFER_GRACE = timedelta(hours=1)


class WindowedPhaseOperator(SddcPhaseOperator):
    """A phase that disrupts the customer: it waits for the SDDC's maintenance window."""

    def __init__(
        self,
        *,
        respect_maintenance_windows: bool = False,
        expected_phase_seconds: Mapping[str, int] | None = None,
        missing_maintenance_window: MissingWindowPolicy = "proceed",
        window_recheck_s: float = 900.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.respect_maintenance_windows = respect_maintenance_windows
        self.expected_phase_seconds = dict(expected_phase_seconds or DEFAULT_EXPECTED_PHASE_SECONDS)
        self.missing_maintenance_window = missing_maintenance_window
        self.window_recheck_s = window_recheck_s

    # -- entry points ------------------------------------------------------------------
    def begin(self, run: PhaseRun) -> Any:
        self.hold_for_window(run)
        return super().begin(run)

    def resume_after_window(self, context: Context, event: dict[str, Any] | None = None, **_: Any) -> Any:
        with self.telemetry(context, "resume_after_window"):
            status = (event or {}).get("status", "window_open")
            self.log.info("maintenance window wait ended (%s): deciding again", status)
            return self.begin(self.open_run(context))

    # -- the window ------------------------------------------------------------------------
    def hold_for_window(self, run: PhaseRun) -> None:
        """Return when the phase may go on; defer until the window opens; fail if it never can."""
        if not self.respect_maintenance_windows:
            return
        sddc = self._read_sddc(run)
        run.remember_sddc(sddc)  # reconciliation judges this read: no second GET
        under_way = self.under_way(run, sddc)
        if under_way is not None:
            self.log.info("%s already under way (%s): continuing whatever the window", self.phase, under_way)
            return
        if isinstance(self.next_step(run, sddc), Done):
            return  # nothing to do: nothing disrupted
        observed = run.ledger.phase_durations(self.rollout)
        expected = {phase: self.expected(observed, phase) for phase in self._phases_left()}
        mine = expected[cast(DisruptivePhase, self.phase)]
        now = datetime.now(UTC)
        decisions = {
            phase: may_start(sddc.maintenance_window, now, e.delta, missing=self.missing_maintenance_window)
            for phase, e in expected.items()
        }
        for phase, refused in decisions.items():  # refuse before changing anything, not half-way through
            if isinstance(refused, Refuse):
                self._refuse(run, refused, phase, expected[phase])
        decision = decisions[cast(DisruptivePhase, self.phase)]
        if isinstance(decision, StartNow):
            self.log.info("%s may start: %s; expected %s", self.phase, decision.message, mine.describe())
            return
        assert isinstance(decision, WaitUntil)
        self._wait_for_window(run, sddc, decision, mine, now)

    def under_way(self, run: PhaseRun, sddc: Sddc) -> str | None:
        """Why the phase is already under way on the real SDDC, or None if it has not begun."""
        for task_id in sddc.active_task_ids:
            task = run.hook.get_task(task_id)
            if task.type in self.task_ops and not task.terminal:
                return f"task {task.id} ({task.type.value}) is running on {self.sddc_id}"
        return None

    def expected(self, observed: Mapping[str, list[float]], phase: DisruptivePhase) -> ExpectedDuration:
        return expected_of(phase, observed, self.expected_phase_seconds)

    def _phases_left(self) -> tuple[DisruptivePhase, ...]:
        return DISRUPTIVE_PHASES[DISRUPTIVE_PHASES.index(cast(DisruptivePhase, self.phase)) :]

    def _read_sddc(self, run: PhaseRun) -> Sddc:
        try:
            return run.hook.get_sddc(self.sddc_id)
        except ApiError as err:
            if err.status == 404:
                self.on_sddc_gone(run, err)
            self.fail_from_error(run, err)

    def _refuse(self, run: PhaseRun, decision: Refuse, phase: str, expected: ExpectedDuration) -> NoReturn:
        what = "" if phase == self.phase else f" (for the later phase {phase})"
        message = (
            f"{decision.message}{what}; expected {expected.describe()}. Nothing was started: widen the "
            f"window, lower expected_phase_seconds or turn respect_maintenance_windows off, then clear "
            f"this task."
        )
        self.fail(run, decision.reason, message, retryable=False, for_good=False)

    def _wait_for_window(
        self, run: PhaseRun, sddc: Sddc, decision: WaitUntil, expected: ExpectedDuration, now: datetime
    ) -> NoReturn:
        window = sddc.maintenance_window
        assert window is not None
        opens_at = decision.opens_at.isoformat()
        self.log.info(
            "%s of %s waits for its maintenance window: opens at %s (in %s); expected %s. %s",
            self.phase,
            self.sddc_id,
            opens_at,
            _wait_text(decision.opens_at - now),
            expected.describe(),
            decision.message,
        )
        run.event(
            WAITING_EVENT,
            f"{self.phase} waits for the maintenance window: opens at {opens_at}",
            {
                "opens_at": opens_at,
                "closes_at": decision.closes_at.isoformat(),
                "window": window.model_dump(),
                "window_text": describe(window),
                "expected_s": round(expected.seconds, 3),
                "expected_source": expected.source,
            },
        )
        self.defer(
            trigger=MaintenanceWindowTrigger(
                opens_at=opens_at,
                sddc_id=self.sddc_id,
                window=window.model_dump(),
                sddc_api_conn_id=self.sddc_api_conn_id,
                recheck_s=self.window_recheck_s,
                trace_id=run.trace_id,
                metrics_ledger_url=run.ledger.url,
                log_fields=log_context.current(),
            ),
            method_name="resume_after_window",
            timeout=decision.opens_at - now + DEFER_GRACE,
        )


def expected_of(
    phase: DisruptivePhase,
    observed: Mapping[str, list[float]],
    planned: Mapping[str, int] | Mapping[DisruptivePhase, int],
) -> ExpectedDuration:
    """The rollout's p90 for the phase once it has enough history, else the plan's fallback."""
    fallback = planned.get(phase, DEFAULT_EXPECTED_PHASE_SECONDS[phase])
    return expected_duration(observed.get(phase, []), fallback)


def _wait_text(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"
