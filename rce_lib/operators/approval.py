"""A human approves promotion of the canary: Airflow 3's approval operator, recorded in the ledger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.exceptions import HITLRejectException
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.errors import Reason
from rce_lib.plan.model import Approval

APPROVED_EVENT = "promotion_approved"
REJECTED_EVENT = "promotion_rejected"
GATE_EVIDENCE = "{{ ti.xcom_pull(task_ids='canary_gate') }}"


class PromotionApprovalOperator(ApprovalOperator):
    """Shows the canary gate's evidence and waits (state `awaiting_input`, no worker, no
    triggerer) for Approve or Reject in the UI's Required Actions. After the plan's
    timeout the plan's `on_timeout` option is taken. Reject fails the task, so the
    rest of the wave never starts and the run fails with PROMOTION_REJECTED.
    """

    def __init__(self, *, rollout: str, wave: str, approval: Approval, **kwargs: Any) -> None:
        default = self.APPROVE if approval.on_timeout == "approve" else self.REJECT
        super().__init__(
            subject=f"Promote wave {wave} past its canary slice?",
            body=f"Canary gate evidence:\n\n```\n{GATE_EVIDENCE}\n```\n\n"
            f"No answer in {approval.timeout_seconds} s means **{default}**.",
            defaults=[default],
            response_timeout=timedelta(seconds=approval.timeout_seconds),
            fail_on_reject=True,
            **kwargs,
        )
        self.rollout = rollout
        self.wave = wave

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ledger = get_ledger()
        run_id = str(context["run_id"])
        try:
            result = super().execute_complete(context=context, event=event)
        except HITLRejectException as err:
            message = f"promotion of wave {self.wave} rejected by a human"
            ledger.append_event(self.rollout, self.wave, REJECTED_EVENT, run_id=run_id, message=message)
            raise AirflowFailException(f"[{Reason.PROMOTION_REJECTED}] {message}") from err
        user = (result or {}).get("responded_by_user")
        who = (user.get("name") if isinstance(user, dict) else user) or "the timeout's default"
        ledger.append_event(
            self.rollout,
            self.wave,
            APPROVED_EVENT,
            run_id=run_id,
            message=f"promotion of wave {self.wave} approved ({who})",
            data={"responded_by": str(who)},
        )
        return result
