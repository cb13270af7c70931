"""Admit an SDDC in the triggerer: the admit task starts there, with no worker at all.

Every SDDC of a wave starts with `admit` at once: at N = 200 that was 200 task processes
queued behind the scheduler and the executor before the first precheck could start, about
one CPU-second of Airflow each (docs/performance.md). Admission is a few ledger reads and
one atomic write, so the admit task starts from the triggerer (`start_from_trigger`): the
scheduler defers it straight away and this trigger runs `AdmitOperator.execute` in a
thread here, with the arguments a worker would have rendered:

* the SDDC id: the map index's entry of the group's slice (`<group>_slice`'s XCom);
* `max_parallel`: the run's `max_parallel` param, else the plan's;
* the cohort size: the length of `resolve_cohort`'s XCom.

Its waits (a slot under `max_parallel`) are awaited here too (`PhaseTrigger`). As for the
phases, a failure goes back to a worker only to be raised there (Airflow's retries apply),
and anything unexpected (a maintenance-window wait, which has a timeout; an XCom missing)
hands the task to a worker, which runs `execute` as it always did. Admission skips a
task the scheduler never starts (it does not check the default pool), which is why admit
is in no service pool: it never held one.

`airflow dags test` ignores `start_from_trigger` and runs `execute` in-process, as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import StartTriggerArgs, TriggerEvent

from rce_lib.triggers.phase import RESUME_METHOD, PhaseTrigger, _in_thread, handoff

log = logging.getLogger(__name__)

ADMIT_OPERATOR = "rce_lib.operators.admission.AdmitOperator"


def slice_task_id(group_id: str) -> str:
    """The task whose XCom lists the SDDCs a mapped group `group_id` expands over."""
    return f"{group_id}_slice"


def start_args(admit: dict[str, Any]) -> StartTriggerArgs:
    """What the scheduler starts an admit task with (`admit`: see AdmitTrigger)."""
    return StartTriggerArgs(
        trigger_cls=f"{__name__}.AdmitTrigger",
        trigger_kwargs={"admit": dict(admit)},
        next_method=RESUME_METHOD,
        next_kwargs=None,
        timeout=None,
    )


class AdmitTrigger(PhaseTrigger):
    """Runs an SDDC's admission here, from the task's start (see the module docstring).

    `admit`: the AdmitOperator's plan-given arguments; `max_parallel` is the plan's value,
    which the run's `max_parallel` param (when set) lowers.
    """

    continuable = frozenset({"execute"})

    def __init__(self, *, admit: dict[str, Any]) -> None:
        super().__init__(
            phase={"classpath": ADMIT_OPERATOR, "kwargs": {}}, context={}, wait=None, method="execute"
        )
        self.admit = dict(admit)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{__name__}.AdmitTrigger", {"admit": self.admit})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            self.phase["kwargs"], self.context = await self.rendered(self.task_instance)
        except Exception as err:  # an XCom not there (yet), no task instance: the worker decides
            log.warning("cannot admit here (%s: %s); a worker takes over", type(err).__name__, err)
            yield handoff("execute", None)
            return
        async for event in super().run():
            yield event

    async def rendered(self, ti: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The operator's arguments and the context fields, as a worker would have them."""
        if ti is None:
            raise RuntimeError("no task instance: not started from the triggerer")
        group = str(ti.task_id).partition(".")[0]
        ids = await ti.axcom_pull(task_ids=slice_task_id(group), map_indexes=-1)
        if not isinstance(ids, list) or not 0 <= int(ti.map_index) < len(ids):
            raise LookupError(f"{slice_task_id(group)} lists no SDDC for map index {ti.map_index}")
        cohort = await ti.axcom_pull(task_ids="resolve_cohort", map_indexes=-1)
        params = (await _in_thread(ti.get_template_context))["params"]
        kwargs = {
            **self.admit,
            "task_id": str(ti.task_id),
            "sddc_id": ids[int(ti.map_index)],
            "max_parallel": params.get("max_parallel") or self.admit.get("max_parallel"),
            "cohort_size": len(cohort) if isinstance(cohort, list) else None,
        }
        context = {
            "run_id": ti.run_id,
            "try_number": ti.try_number,
            "map_index": ti.map_index,
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
        }
        return kwargs, context
