"""The wave's brakes, checked before an SDDC starts: the error budget and the kill switch.

Checked by the first phase (precheck) when it begins, before it admits the SDDC, and again
each time a wait for admission ends: failures may have piled up meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime
from logging import Logger
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rce_lib.airflow_support import kill_switch
from rce_lib.errors import Reason
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import EventKind, LastError, Status

#: Failures that say nothing about the release (a brake, a policy): not counted in the error budget.
NOT_THE_RELEASE = (Reason.KILL_SWITCH, Reason.MAINTENANCE_WINDOW_TOO_SHORT, Reason.NO_MAINTENANCE_WINDOW)


class Brake(Exception):
    """The SDDC must not start: `skip` (budget spent) or fail (kill switch), with the reason."""

    def __init__(self, reason: Reason, message: str, *, skip: bool) -> None:
        super().__init__(f"[{reason}] {message}")
        self.reason = reason
        self.message = message
        self.skip = skip


def check(
    ledger: Ledger,
    *,
    rollout: str,
    wave: str,
    sddc_id: str,
    run_id: str,
    cohort_size: int | None,
    max_fail_percentage: float,
) -> None:
    """Raise Brake (and record it on the SDDC) if the kill switch is set, or if the run's final
    failures exceed the budget and this SDDC has not started a phase in this run yet."""
    brake = kill_switch.engaged(wave)
    if brake is not None:
        message = f"{sddc_id} not started: {brake}. Unset it, then clear this task to resume."
        _record(ledger, rollout, wave, sddc_id, run_id, Status.FAILED, Reason.KILL_SWITCH, message)
        raise Brake(Reason.KILL_SWITCH, message, skip=False)
    if not cohort_size:
        return
    started = ledger.events(
        rollout=rollout, wave=wave, sddc_id=sddc_id, run_id=run_id, kinds=[EventKind.PHASE_STARTED], limit=1
    )
    if started:
        return  # already under way in this run (a retry, a cleared task): let it finish
    failed = ledger.final_failures(rollout, wave, run_id, ignore_codes=NOT_THE_RELEASE)
    percent = 100.0 * failed / cohort_size
    if percent > max_fail_percentage:
        message = (
            f"{sddc_id} not started: {failed} of {cohort_size} SDDC(s) of this run failed ({percent:.0f}%), "
            f"more than the wave's max_fail_percentage {max_fail_percentage:g}%"
        )
        _record(
            ledger, rollout, wave, sddc_id, run_id, Status.SKIPPED, Reason.ERROR_BUDGET_EXHAUSTED, message
        )
        raise Brake(Reason.ERROR_BUDGET_EXHAUSTED, message, skip=True)


class _CarriesBrake(Exception):
    """`reason` and `detail` as a phase's own failures carry them, so that a brake raised in the
    triggerer keeps them on its way to a worker (rce_lib.triggers.phase.raised)."""

    def __init__(self, brake: Brake) -> None:
        super().__init__(str(brake))
        self.reason = str(brake.reason)
        self.detail = brake.message


class BrakeSkip(_CarriesBrake, AirflowSkipException):
    """The error budget is spent: the task is skipped."""


class BrakeFailure(_CarriesBrake, AirflowFailException):
    """The kill switch is set: the task fails (no retry; clearing it resumes)."""


def enforce(ledger: Ledger, log: Logger | Any, **where: Any) -> None:
    """`check`, as Airflow sees it: a spent budget skips the task, the kill switch fails it."""
    try:
        check(ledger, **where)
    except Brake as brake:
        log.warning("%s", brake.message)
        if brake.skip:
            raise BrakeSkip(brake) from None
        raise BrakeFailure(brake) from None


def _record(
    ledger: Ledger,
    rollout: str,
    wave: str,
    sddc_id: str,
    run_id: str,
    status: Status,
    reason: Reason,
    message: str,
) -> None:
    ledger.upsert_progress(
        rollout,
        wave,
        sddc_id,
        run_id,
        event="brake_applied",
        message=message,
        data={"reason": reason.value},
        status=status,
        last_error=LastError(code=reason.value, message=message, retryable=False),
        finished_at=datetime.now(UTC),
    )
