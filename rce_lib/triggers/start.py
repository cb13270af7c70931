"""Start a task in the triggerer, with no worker at all: every phase of an SDDC's group but
the rollback (which starts only after a failure).

Every SDDC of a wave starts at once: at N = 200 that was 200 task processes queued behind the
scheduler and the executor before the first downstream call, about one CPU-second of Airflow
each, and every phase after it waited the same way (Airflow queues 16 task instances per
scheduler loop; docs/performance.md, seventh, eighth and twelfth rounds). So these tasks start
from the triggerer (`start_from_trigger`): the scheduler defers them straight away and
`StartTrigger` runs the operator's `execute` (its `run_from_start`) in a thread here, with the
arguments a worker would have rendered:

* the SDDC id: the map index's entry of the group's slice (`<group>_slice`'s XCom);
* `from_params`: arguments the run's params set (when set; else the plan's value);
* `xcom_lengths`: arguments that are the length of a task's XCom (the cohort's size).

Its waits (a slot under `max_parallel`, a slot on its service, its downstream tasks, the
postcheck's health re-checks) are awaited here too (`PhaseTrigger`). As for the phases, a
failure goes back to a worker only to be raised there (Airflow's retries apply), and
anything unexpected (a wait with a timeout, such as a maintenance window's; an XCom missing)
hands the task to a worker, which runs `execute` as it always did.

The scheduler checks no pool for a task it starts this way. A phase that starts downstream
work names its service (`ceiling_of`) and starts here only while the ledger holds that
service's ceiling, the pool's size (rce_lib.airflow_support.pool_ceilings), which its
downstream tasks' slots never exceed (rce_lib.pacing.store); without one a worker runs it,
under the pool. `airflow dags test` ignores `start_from_trigger` and runs `execute`
in-process, as before.

Airflow 3.3's trigger runner cannot set a task's `rendered_map_index`: the grid names by SDDC
id only the task instances a worker ran (a failure raised, a hand-over), and shows the others
by map index; the ledger, `rce status` and the `/rce/` page name every SDDC.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import StartTriggerArgs, TriggerEvent

from rce_lib.triggers.phase import CONTINUABLE, RESUME_METHOD, PhaseTrigger, _in_thread, enabled, handoff

log = logging.getLogger(__name__)

#: what a task started here runs first: its `execute` minus Airflow's guard against calls from
#: outside the task runner (which would log a warning for every task started here)
START_METHOD = "run_from_start"


def slice_task_id(group_id: str) -> str:
    """The task whose XCom lists the SDDCs a mapped group `group_id` expands over."""
    return f"{group_id}_slice"


def start_in_triggerer(
    task: Any,
    static: Mapping[str, Any],
    *,
    from_params: Mapping[str, str] | None = None,
    xcom_lengths: Mapping[str, str] | None = None,
    ceiling_of: str | None = None,
) -> None:
    """Have the scheduler start `task` here, no worker: StartTrigger rebuilds its class from
    `static` plus what it renders (see the module docstring). Not when RCE_PHASES_IN_TRIGGERER
    is off where DAGs are parsed. The scheduler checks no pool for it: a task that starts
    downstream work names its service (`ceiling_of`), and starts here only while the ledger
    holds that service's ceiling (the pool's size, which its slots then never exceed)."""
    if not enabled():
        return
    task.start_trigger_args = StartTriggerArgs(
        trigger_cls=f"{__name__}.StartTrigger",
        trigger_kwargs={
            "operator": f"{type(task).__module__}.{type(task).__qualname__}",
            "static": dict(static),
            "from_params": dict(from_params or {}),
            "xcom_lengths": dict(xcom_lengths or {}),
            "ceiling_of": ceiling_of,
        },
        next_method=RESUME_METHOD,
        next_kwargs=None,
        timeout=None,
    )
    task.start_from_trigger = True


class StartTrigger(PhaseTrigger):
    """Runs a task's `execute` here, from the task's start (see the module docstring)."""

    continuable = CONTINUABLE | {START_METHOD}

    def __init__(
        self,
        *,
        operator: str,
        static: dict[str, Any],
        from_params: dict[str, str] | None = None,
        xcom_lengths: dict[str, str] | None = None,
        ceiling_of: str | None = None,
    ) -> None:
        super().__init__(
            phase={"classpath": operator, "kwargs": {}}, context={}, wait=None, method=START_METHOD
        )
        self.operator = operator
        self.static = dict(static)
        self.from_params = dict(from_params or {})
        self.xcom_lengths = dict(xcom_lengths or {})
        self.ceiling_of = ceiling_of

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.StartTrigger",
            {
                "operator": self.operator,
                "static": self.static,
                "from_params": self.from_params,
                "xcom_lengths": self.xcom_lengths,
                "ceiling_of": self.ceiling_of,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            self.phase["kwargs"], self.context = await self.rendered(self.task_instance)
            if self.ceiling_of is not None and await _in_thread(_ceiling, self.ceiling_of) is None:
                raise LookupError(f"the ledger holds no ceiling for {self.ceiling_of} (its pool's size)")
        except Exception as err:  # an XCom not there (yet), no ceiling: the worker decides
            log.warning("cannot start here (%s: %s); a worker takes over", type(err).__name__, err)
            yield handoff(START_METHOD, None)
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
        kwargs = {**self.static, "task_id": str(ti.task_id), "sddc_id": ids[int(ti.map_index)]}
        for name, task_id in self.xcom_lengths.items():
            value = await ti.axcom_pull(task_ids=task_id, map_indexes=-1)
            kwargs[name] = len(value) if isinstance(value, list) else None
        if self.from_params:
            params = (await _in_thread(ti.get_template_context))["params"]
            for name, param in self.from_params.items():
                if params.get(param) is not None:
                    kwargs[name] = params[param]
        context = {
            "run_id": ti.run_id,
            "try_number": ti.try_number,
            "map_index": ti.map_index,
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
        }
        return kwargs, context


def _ceiling(service: str) -> int | None:
    from rce_lib.airflow_support.ledger_conn import get_ledger
    from rce_lib.pacing.store import Pacer

    return Pacer(get_ledger()).ceiling(service)
