"""Admission: at most `max_parallel` SDDCs of a run in flight at once, taken by each SDDC's
first phase (the precheck) before it touches the SDDC.

It was a task of its own (`admit`) until the twelfth round of issue 6: one task instance
per SDDC that the scheduler, the triggerer and the dag-processor (a callback for every task
ending in the triggerer) each paid for, and one scheduler loop between the cohort and each
SDDC's first downstream call (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context

from rce_lib.airflow_support.rendered import as_int
from rce_lib.errors import RceError
from rce_lib.ledger import Phase
from rce_lib.operators import brakes
from rce_lib.operators.base import SddcPhaseOperator
from rce_lib.operators.runtime import PhaseRun, in_process_test_run
from rce_lib.operators.windowed import DEFER_GRACE, WAITING_EVENT, expected_of
from rce_lib.plan.model import DEFAULT_EXPECTED_PHASE_SECONDS, DisruptivePhase
from rce_lib.plan.windows import WaitUntil, describe, may_start
from rce_lib.telemetry import log_context
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger
from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger

#: the method a wait for admission (an in-flight slot, the maintenance window) resumes
ADMISSION_METHOD = "resume_for_admission"
#: the disruptive phase whose window an SDDC waits for before it takes an in-flight slot
FIRST_DISRUPTIVE: DisruptivePhase = "upgrade_vcenter"


class AdmittingPhaseOperator(SddcPhaseOperator):
    """The first phase of an SDDC: before anything else it applies the wave's brakes, waits
    for the SDDC's maintenance window (with `respect_maintenance_windows`), then takes an
    in-flight slot for the SDDC in the ledger (atomically, `Ledger.admit`) or waits, deferred,
    for one (`LedgerSlotTrigger`).

    Every wait here is a deferral, and the service pools do not count deferred tasks
    (`include_deferred: false`): an SDDC waiting to be admitted holds no pool slot, so waiting
    SDDCs never fill the pool that the admitted ones need to finish (which would deadlock the
    wave). SDDCs waiting for their windows hold no in-flight slot either, so they never hold
    up SDDCs whose window is open; the disruptive phases still check the window themselves.
    The slot is held until the SDDC's upgrade ends (succeeded, failed for good, rolled back).

    The brakes: once more than `max_fail_percentage` of the run's cohort failed for good, an
    SDDC not yet under way is skipped (ERROR_BUDGET_EXHAUSTED); while the kill switch is set,
    the phase fails (KILL_SWITCH) and is resumed by clearing once the switch is off.
    """

    template_fields: Sequence[str] = (*SddcPhaseOperator.template_fields, "max_parallel", "cohort_size")

    def __init__(
        self,
        *,
        max_parallel: int | str | None = None,
        max_fail_percentage: float = 100.0,
        cohort_size: int | str | None = None,
        respect_maintenance_windows: bool = False,
        expected_phase_seconds: Mapping[str, int] | None = None,
        window_recheck_s: float = 900.0,
        admission_poll_s: float = 5.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_parallel = max_parallel
        self.max_fail_percentage = max_fail_percentage
        self.cohort_size = cohort_size
        self.respect_maintenance_windows = respect_maintenance_windows
        self.expected_phase_seconds = dict(expected_phase_seconds or DEFAULT_EXPECTED_PHASE_SECONDS)
        self.window_recheck_s = window_recheck_s
        self.admission_poll_s = admission_poll_s

    def begin(self, run: PhaseRun) -> Any:
        self.check_brakes(run)
        self.admit(run)
        return super().begin(run)

    def resume_for_admission(self, context: Context, event: Any = None, **_: Any) -> Any:
        """A wait for admission ended (a slot may be free, the window may be open): begin again,
        brakes first (failures may have piled up meanwhile)."""
        with self.telemetry(context, ADMISSION_METHOD):
            return self.begin(self.open_run(context))

    def check_brakes(self, run: PhaseRun) -> None:
        """Skip when the error budget is spent; fail while the kill switch is set."""
        brakes.enforce(
            run.ledger,
            self.log,
            rollout=self.rollout,
            wave=self.wave,
            sddc_id=self.sddc_id,
            run_id=run.run_id,
            cohort_size=as_int(self.cohort_size),
            max_fail_percentage=self.max_fail_percentage,
        )

    def admit(self, run: PhaseRun) -> None:
        """Return once the SDDC holds an in-flight slot (or there is no limit); else defer."""
        self.wait_for_window(run)
        limit = as_int(self.max_parallel)
        if limit is None or in_process_test_run():
            return  # `airflow dags test` runs one task at a time: the limit holds trivially
        if run.admit(limit):
            return
        self.log.info("%d SDDCs of this run are in flight (max_parallel): waiting for a slot", limit)
        self.defer(
            trigger=LedgerSlotTrigger(
                ledger_url=run.ledger.url,
                rollout=self.rollout,
                wave=self.wave,
                run_id=run.run_id,
                limit=limit,
                poll_s=self.admission_poll_s,
                first_poll_s=self.resume_delay_s,
                log_fields=log_context.current(),
            ),
            method_name=ADMISSION_METHOD,
        )

    def wait_for_window(self, run: PhaseRun) -> None:
        """Defer until the window opens with room for upgrade_vcenter (a no-op when the plan
        does not respect windows, or the SDDC already started a later phase in this run). A
        window that can never fit, or a missing one, is left to that phase to refuse with its
        reason."""
        if not self.respect_maintenance_windows:
            return
        progress = run.progress()
        if progress is not None and progress.run_id == run.run_id and progress.phase is not Phase.PRECHECK:
            return  # under way in this run: the phases judge the window themselves
        try:
            sddc = run.hook.get_sddc(self.sddc_id)
        except RceError as err:
            self.log.warning(
                "could not read %s's maintenance window (%s): the phases will check it", self.sddc_id, err
            )
            return
        run.remember_sddc(sddc)  # the reconciliation judges this read: no second GET
        window = sddc.maintenance_window
        if window is None:
            return
        expected = expected_of(
            FIRST_DISRUPTIVE, run.ledger.phase_durations(self.rollout), self.expected_phase_seconds
        )
        now = datetime.now(UTC)
        decision = may_start(window, now, expected.delta)
        if not isinstance(decision, WaitUntil):
            return
        opens_at = decision.opens_at.isoformat()
        message = (
            f"{self.sddc_id} waits for its maintenance window ({describe(window)}) before taking a slot: "
            f"opens at {opens_at}; {FIRST_DISRUPTIVE} is expected to take {expected.describe()}"
        )
        self.log.info("%s", message)
        run.event(
            WAITING_EVENT,
            message,
            {"opens_at": opens_at, "closes_at": decision.closes_at.isoformat(), "by": "admission"},
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
            method_name=ADMISSION_METHOD,
            timeout=decision.opens_at - now + DEFER_GRACE,
        )
