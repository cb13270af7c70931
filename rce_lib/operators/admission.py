"""Admission: at most `max_parallel` SDDCs of a wave run in flight at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.airflow_support.rendered import as_int
from rce_lib.api.models import SDDC_ID_RE
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
    """

    template_fields: Sequence[str] = ("sddc_id", "max_parallel")
    ui_color = "#f3f3f3"

    def __init__(
        self,
        *,
        sddc_id: str,
        rollout: str,
        wave: str,
        max_parallel: int | str | None,
        poll_s: float = 5.0,
        resume_delay_s: float = 15.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sddc_id = sddc_id
        self.rollout = rollout
        self.wave = wave
        self.max_parallel = max_parallel
        self.poll_s = poll_s
        self.resume_delay_s = resume_delay_s

    def execute(self, context: Context, event: Any = None) -> str:
        if not isinstance(self.sddc_id, str) or not SDDC_ID_RE.fullmatch(self.sddc_id):
            raise AirflowFailException(f"[INVALID_IDENTIFIER] SDDC id {self.sddc_id!r} is not valid")
        limit = as_int(self.max_parallel)
        if limit is None:
            return "no in-flight limit"
        if in_process_test_run():
            return "dag.test runs one task at a time: the limit holds trivially"
        run_id = str(context["run_id"])
        ledger = get_ledger()
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
