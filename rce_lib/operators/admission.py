"""Admission: at most `max_parallel` SDDCs of a wave run in flight at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_int
from rce_lib.api.models import SDDC_ID_RE
from rce_lib.ledger import Ledger
from rce_lib.operators import brakes
from rce_lib.operators.runtime import in_process_test_run
from rce_lib.triggers.ledger_slot import LedgerSlotTrigger


class AdmitOperator(BaseOperator):
    """Wait, deferred, until the run has fewer than `max_parallel` SDDCs in flight,
    then take a slot for this SDDC in the ledger (atomically).

    It is its own task in Airflow's default pool (which does not count deferred
    tasks), not part of the precheck: a waiting SDDC must hold no slot of a
    service pool, or waiting SDDCs could fill the pool that the admitted ones need
    to finish, and the wave would deadlock. The slot is held from here until the
    SDDC's upgrade ends (succeeded, failed for good or rolled back).

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sddc_id = sddc_id
        self.rollout = rollout
        self.wave = wave
        self.max_parallel = max_parallel
        self.max_fail_percentage = max_fail_percentage
        self.cohort_size = cohort_size
        self.poll_s = poll_s
        self.resume_delay_s = resume_delay_s

    def execute(self, context: Context, event: Any = None) -> str:
        if not isinstance(self.sddc_id, str) or not SDDC_ID_RE.fullmatch(self.sddc_id):
            raise AirflowFailException(f"[INVALID_IDENTIFIER] SDDC id {self.sddc_id!r} is not valid")
        run_id = str(context["run_id"])
        ledger = get_ledger()
        self.check_brakes(ledger, run_id)
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
            ),
            method_name="execute",
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
