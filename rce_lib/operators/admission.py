"""Admission: at most `max_parallel` SDDCs of a wave run in flight at once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_int
from rce_lib.api.models import SDDC_ID_RE
from rce_lib.errors import RceError
from rce_lib.ledger import Ledger, Phase
from rce_lib.operators import brakes
from rce_lib.operators.runtime import in_process_test_run
from rce_lib.operators.windowed import DEFER_GRACE, WAITING_EVENT
from rce_lib.plan.model import DEFAULT_EXPECTED_PHASE_SECONDS, DisruptivePhase
from rce_lib.plan.windows import WaitUntil, describe, expected_duration, may_start
from rce_lib.telemetry import log_context, scope
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger
from rce_lib.triggers.maintenance_window import MaintenanceWindowTrigger
from rce_lib.triggers.start import START_METHOD


class AdmitOperator(BaseOperator):
    """Wait, deferred, until the run has fewer than `max_parallel` SDDCs in flight,
    then take a slot for this SDDC in the ledger (atomically).

    It is its own task in Airflow's default pool (which does not count deferred
    tasks), not part of the precheck: a waiting SDDC must hold no slot of a
    service pool, or waiting SDDCs could fill the pool that the admitted ones need
    to finish, and the wave would deadlock. The slot is held from here until the
    SDDC's upgrade ends (succeeded, failed for good or rolled back).

    With `respect_maintenance_windows`, it first waits (deferred, here, in the default
    pool) until the SDDC's maintenance window is open with room for its first
    disruptive phase, and only then takes its in-flight slot: SDDCs waiting for their
    windows hold neither a service pool slot nor a `max_parallel` slot, so they never
    hold up SDDCs whose window is open. The disruptive phases still check the window
    themselves before they start (rce_lib.operators.windowed).

    It is also where the wave's brakes act, before anything is touched: once more
    than `max_fail_percentage` of the run's cohort failed for good, the SDDC is
    skipped (ERROR_BUDGET_EXHAUSTED); while the kill switch is set, it fails
    (KILL_SWITCH) and is resumed by clearing once the switch is off.
    """

    template_fields: Sequence[str] = ("sddc_id", "max_parallel", "cohort_size")
    ui_color = "#f3f3f3"

    def __init__(
        self,
        *,
        sddc_id: str,
        rollout: str,
        wave: str,
        max_parallel: int | str | None,
        max_fail_percentage: float = 100.0,
        cohort_size: int | str | None = None,
        poll_s: float = 5.0,
        resume_delay_s: float = 15.0,
        respect_maintenance_windows: bool = False,
        expected_phase_seconds: Mapping[str, int] | None = None,
        sddc_api_conn_id: str = "sddc_api",
        window_recheck_s: float = 900.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.respect_maintenance_windows = respect_maintenance_windows
        self.expected_phase_seconds = dict(expected_phase_seconds or DEFAULT_EXPECTED_PHASE_SECONDS)
        self.sddc_api_conn_id = sddc_api_conn_id
        self.window_recheck_s = window_recheck_s
        self.sddc_id = sddc_id
        self.rollout = rollout
        self.wave = wave
        self.max_parallel = max_parallel
        self.max_fail_percentage = max_fail_percentage
        self.cohort_size = cohort_size
        self.poll_s = poll_s
        self.resume_delay_s = resume_delay_s

    def execute(self, context: Context, event: Any = None) -> str:
        return self.run_from_start(context, event)

    def run_from_start(self, context: Context, event: Any = None) -> str:
        """Admission: `execute` on a worker, or in the triggerer (rce_lib.triggers.start); a slot
        or window wait resumes here."""
        with scope.sddc_scope(
            rollout=self.rollout,
            wave=self.wave,
            sddc_id=self.sddc_id,
            phase="admit",
            context=context,
            entry="execute" if event is None else "slot_free",
        ):
            return self.admit(context)

    def in_triggerer(self) -> None:
        """Run by a StartTrigger: a slot wait's first look need not amortise a worker's start."""
        self.resume_delay_s = 0.0

    def resume_from_triggerer(self, context: Context, event: Any = None, **_: Any) -> str | None:
        """Where an admission started in the triggerer (rce_lib.triggers.start) comes to a
        worker: to raise the failure or skip it met there (Airflow's retries apply), or to
        admit from the start (the triggerer could not)."""
        if not isinstance(event, dict):
            # `airflow dags test` resumes a task the trigger ended with the state's name
            return None
        if event.get("status") == "raised":
            reason, message = event.get("reason"), str(event.get("message"))
            message = f"[{reason}] {message}" if reason else message
            if event.get("kind") == "skip":
                raise AirflowSkipException(message)
            if event.get("kind") == "fail":
                raise AirflowFailException(message)
            raise AirflowException(message)
        if event.get("status") != "handoff" or event.get("method") != START_METHOD:
            raise AirflowFailException(f"[API_ERROR] unexpected event from the triggerer: {event!r}")
        return self.run_from_start(context, event=event.get("event"))

    def admit(self, context: Context) -> str:
        if not isinstance(self.sddc_id, str) or not SDDC_ID_RE.fullmatch(self.sddc_id):
            raise AirflowFailException(f"[INVALID_IDENTIFIER] SDDC id {self.sddc_id!r} is not valid")
        run_id = str(context["run_id"])
        ledger = get_ledger()
        self.check_brakes(ledger, run_id)
        self.wait_for_window(ledger, run_id)
        limit = as_int(self.max_parallel)
        if limit is None:
            return "no in-flight limit"
        if in_process_test_run():
            return "dag.test runs one task at a time: the limit holds trivially"
        if ledger.admit(self.rollout, self.wave, self.sddc_id, run_id, limit):
            return f"admitted (max_parallel {limit})"
        self.log.info("%d SDDCs of this run are in flight (max_parallel): waiting for a slot", limit)
        self.defer(
            trigger=LedgerSlotTrigger(
                ledger_url=ledger.url,
                rollout=self.rollout,
                wave=self.wave,
                run_id=run_id,
                limit=limit,
                poll_s=self.poll_s,
                first_poll_s=self.resume_delay_s,
                log_fields=log_context.current(),
            ),
            method_name=START_METHOD,
        )

    def wait_for_window(self, ledger: Ledger, run_id: str) -> None:
        """Defer until the window opens with room for upgrade_vcenter (a no-op when the plan
        does not respect windows, or the SDDC already started a phase in this run). A window
        that can never fit, or a missing one, is left to the phase to refuse with its reason."""
        if not self.respect_maintenance_windows:
            return
        progress = ledger.get(self.rollout, self.wave, self.sddc_id)
        if progress is not None and progress.run_id == run_id and progress.phase is not Phase.PRECHECK:
            return  # under way in this run: the phases judge the window themselves
        from rce_lib.api.tracing import trace_id_for
        from rce_lib.hooks.sddc_api import SddcApiHook
        from rce_lib.metrics.downstream import ledger_recorder

        hook = SddcApiHook(
            sddc_api_conn_id=self.sddc_api_conn_id,
            trace_id=trace_id_for(self.rollout, self.wave, self.sddc_id, run_id),
            on_request=ledger_recorder(ledger.url).observe,
        )
        try:
            window = hook.get_sddc(self.sddc_id).maintenance_window
        except RceError as err:
            self.log.warning(
                "could not read %s's maintenance window (%s): the phases will check it", self.sddc_id, err
            )
            return
        finally:
            hook.close()
        if window is None:
            return
        first: DisruptivePhase = "upgrade_vcenter"
        expected = expected_duration(
            ledger.phase_durations(self.rollout).get(first, []),
            self.expected_phase_seconds.get(first, DEFAULT_EXPECTED_PHASE_SECONDS[first]),
        )
        now = datetime.now(UTC)
        decision = may_start(window, now, expected.delta)
        if not isinstance(decision, WaitUntil):
            return
        opens_at = decision.opens_at.isoformat()
        message = (
            f"{self.sddc_id} waits for its maintenance window ({describe(window)}) before taking a slot: "
            f"opens at {opens_at}; {first} is expected to take {expected.describe()}"
        )
        self.log.info("%s", message)
        ledger.append_event(
            self.rollout,
            self.wave,
            WAITING_EVENT,
            sddc_id=self.sddc_id,
            run_id=run_id,
            message=message,
            data={"opens_at": opens_at, "closes_at": decision.closes_at.isoformat(), "by": "admit"},
        )
        self.defer(
            trigger=MaintenanceWindowTrigger(
                opens_at=opens_at,
                sddc_id=self.sddc_id,
                window=window.model_dump(),
                sddc_api_conn_id=self.sddc_api_conn_id,
                recheck_s=self.window_recheck_s,
                metrics_ledger_url=ledger.url,
                log_fields=log_context.current(),
            ),
            method_name=START_METHOD,
            timeout=decision.opens_at - now + DEFER_GRACE,
        )

    def check_brakes(self, ledger: Ledger, run_id: str) -> None:
        """Skip when the error budget is spent; fail while the kill switch is set."""
        brakes.enforce(
            ledger,
            self.log,
            rollout=self.rollout,
            wave=self.wave,
            sddc_id=self.sddc_id,
            run_id=run_id,
            cohort_size=as_int(self.cohort_size),
            max_fail_percentage=self.max_fail_percentage,
        )
