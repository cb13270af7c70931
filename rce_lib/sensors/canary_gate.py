"""The canary gate: after the canary slice and its bake, judge on evidence whether the
rest of the wave may run.

It waits in the triggerer (TimeDeltaTrigger) between health samples, so a bake of
an hour holds no worker. Each wake reads the health of the upgraded canary SDDCs
and of a baseline of SDDCs not yet upgraded and records the readings in the
ledger; once the bake is over it judges (`rce_lib.gate.evidence`), records the
decision with all its evidence, logs it as one block and returns it (the
approval step shows it). A FAIL, or an INCONCLUSIVE the plan fails closed on,
fails this task: the canary rollback then runs and the rest of the wave never
starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from rce_lib.airflow_support import kill_switch
from rce_lib.airflow_support.ledger_conn import get_ledger
from rce_lib.api.models import VERSION_RE, SddcStatus
from rce_lib.api.tracing import trace_id_for
from rce_lib.errors import RceError, Reason
from rce_lib.gate import evidence, record
from rce_lib.gate.evidence import Check, GateDecision, Member, Reading
from rce_lib.gate.stats import Verdict
from rce_lib.ledger import Ledger
from rce_lib.ledger.models import EventKind, Progress
from rce_lib.metrics.downstream import ledger_recorder
from rce_lib.plan.model import Gate, PromQLSignal
from rce_lib.telemetry import scope

COHORT_TASK = "resolve_cohort"
HELD_EVENT = "gate_held_by_kill_switch"


class CanaryGateSensor(BaseSensorOperator):
    """Decide PASS / FAIL / INCONCLUSIVE for the canary slice of one wave run."""

    template_fields: Sequence[str] = ("target_version",)
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        rollout: str,
        wave: str,
        target_version: str,
        gate: Gate,
        max_fail_percentage: float,
        bake_seconds: int,
        sddc_api_conn_id: str = "sddc_api",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", float(gate.sample_interval_seconds))
        super().__init__(**kwargs)
        self.rollout = rollout
        self.wave = wave
        self.target_version = target_version
        self.gate = gate
        self.max_fail_percentage = max_fail_percentage
        self.bake_seconds = bake_seconds
        self.sddc_api_conn_id = sddc_api_conn_id

    def poke(self, context: Context) -> bool:
        """One judgement; True on PASS (the sensor protocol; `execute` is what runs)."""
        return self.judge(context).decision is Verdict.PASS

    def execute(self, context: Context, event: Any = None) -> str:
        with scope.wave_scope(rollout=self.rollout, wave=self.wave, task="canary_gate", context=context):
            return self.decide(context)

    def decide(self, context: Context) -> str:
        decision = self.judge(context)
        if decision.holding:
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=self.gate.sample_interval_seconds)),
                method_name="execute",
            )
        if decision.decision is Verdict.FAIL:
            raise AirflowFailException(f"[{Reason.CANARY_GATE_FAILED}] " + "; ".join(decision.reasons))
        if decision.decision is Verdict.INCONCLUSIVE:
            raise AirflowFailException(
                f"[{Reason.GATE_INCONCLUSIVE}] the plan fails closed: " + "; ".join(decision.reasons)
            )
        return decision.render()

    # -- one wake -------------------------------------------------------------------
    def judge(self, context: Context) -> GateDecision:
        """Sample, and once the bake is over decide; defers (raises) while baking."""
        from rce_lib.hooks.sddc_api import SddcApiHook

        if not VERSION_RE.fullmatch(str(self.target_version)):
            raise AirflowFailException(f"[{Reason.INVALID_PARAMS}] target_version {self.target_version!r}")
        run_id = str(context["run_id"])
        ti = context["ti"]
        canary_ids = list(ti.xcom_pull(task_ids=COHORT_TASK, key="canary") or [])
        bulk_ids = list(ti.xcom_pull(task_ids=COHORT_TASK, key="bulk") or [])
        ledger = get_ledger()
        now = datetime.now(UTC)
        brake = kill_switch.engaged(self.wave) if canary_ids else None
        if brake is not None:
            message = f"the canary gate does not judge while {brake}; unset it, then clear canary_gate"
            ledger.append_event(self.rollout, self.wave, HELD_EVENT, run_id=run_id, message=message)
            raise AirflowFailException(f"[{Reason.KILL_SWITCH}] {message}")
        if not canary_ids:
            decision = evidence.decide(
                self.wave,
                run_id,
                [Check(name="canary_slice", verdict=Verdict.PASS, detail="the wave has no canary slice")],
                now=now,
                hold=False,
                bake_ends_at=None,
            )
            return self._record(ledger, decision)

        hook = SddcApiHook(
            sddc_api_conn_id=self.sddc_api_conn_id,
            trace_id=trace_id_for(self.rollout, self.wave, run_id),
            on_request=ledger_recorder(ledger.url).observe,
        )
        progress = {i: ledger.get(self.rollout, self.wave, i) for i in canary_ids}
        members = [_member(i, p) for i, p in progress.items()]
        upgraded = [m.sddc_id for m in members if m.upgraded]
        bake_ends = _slice_end(progress.values(), now) + timedelta(seconds=self.bake_seconds)

        samples = ledger.events(
            rollout=self.rollout, wave=self.wave, run_id=run_id, kinds=[record.SAMPLE_EVENT], limit=100_000
        )
        baseline_ids = (
            list(samples[0].data.get("baseline_ids", []))
            if samples
            else self._choose_baseline(hook, canary_ids, bulk_ids)
        )
        latest = {i: _read(hook, i) for i in upgraded}
        base_now = [_read(hook, i) for i in baseline_ids]
        ledger.append_event(
            self.rollout,
            self.wave,
            record.SAMPLE_EVENT,
            run_id=run_id,
            message=f"{len(latest)} canary and {len(base_now)} baseline health reading(s)",
            data={
                "baseline_ids": baseline_ids,
                "canary": [r.model_dump() for r in latest.values()],
                "baseline": [r.model_dump() for r in base_now],
            },
        )
        if now < bake_ends:
            wait = min(float(self.gate.sample_interval_seconds), (bake_ends - now).total_seconds())
            self.log.info("canary slice baking until %s; next sample in %.0f s", bake_ends.isoformat(), wait)
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=max(wait, 1.0))), method_name="execute")

        canary_readings = [Reading.model_validate(r) for e in samples for r in e.data.get("canary", [])]
        base_readings = [Reading.model_validate(r) for e in samples for r in e.data.get("baseline", [])]
        canary_readings += latest.values()
        base_readings += base_now
        checks = [
            evidence.failure_rate(members, self.max_fail_percentage),
            evidence.health(latest, upgraded, self.gate),
            evidence.phase_latency(
                self._canary_durations(ledger, run_id, upgraded),
                ledger.phase_durations(self.rollout, exclude_sddc_ids=canary_ids),
                self.gate,
            ),
            *evidence.baseline(canary_readings, base_readings, self.gate),
        ]
        if self.gate.prometheus is not None:
            values, error = _promql(self.gate.prometheus)
            checks.append(evidence.prometheus(self.gate.prometheus, values, error))
        hold_until = bake_ends + timedelta(seconds=self.gate.max_hold_seconds)
        hold = self.gate.inconclusive == "hold" and now < hold_until
        decision = evidence.decide(self.wave, run_id, checks, now=now, hold=hold, bake_ends_at=bake_ends)
        return self._record(ledger, decision)

    def _record(self, ledger: Ledger, decision: GateDecision) -> GateDecision:
        record.record(ledger, self.rollout, decision)
        self.log.info("\n%s", decision.render())
        return decision

    def _choose_baseline(self, hook: Any, canary_ids: list[str], bulk_ids: list[str]) -> list[str]:
        """SDDCs not yet upgraded: the rest of the cohort first, then others of the fleet."""
        size = self.gate.baseline_size
        chosen = list(bulk_ids[:size])
        if len(chosen) >= size:
            return chosen
        taken = set(canary_ids) | set(bulk_ids)
        try:
            for sddc in hook.list_sddcs():
                if len(chosen) >= size:
                    break
                upgraded = sddc.version == self.target_version
                if sddc.id in taken or upgraded or sddc.status is not SddcStatus.READY:
                    continue
                chosen.append(sddc.id)
        except RceError as err:
            self.log.warning("baseline: could not list the fleet (%s); using the cohort only", err)
        return chosen

    def _canary_durations(self, ledger: Ledger, run_id: str, ids: list[str]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for sddc_id in ids:
            for event in ledger.events(
                rollout=self.rollout,
                wave=self.wave,
                sddc_id=sddc_id,
                run_id=run_id,
                kinds=[EventKind.PHASE_SUCCEEDED.value],
            ):
                seconds = event.data.get("duration_s")
                if event.phase is not None and isinstance(seconds, int | float):
                    out.setdefault(sddc_id, {})[event.phase.value] = float(seconds)
        return out


def _member(sddc_id: str, progress: Progress | None) -> Member:
    if progress is None:
        return Member(sddc_id=sddc_id, status="missing", phase="none", error_code="NO_LEDGER_RECORD")
    code = progress.last_error.code if progress.last_error else None
    return Member(sddc_id=sddc_id, status=progress.status.value, phase=progress.phase.value, error_code=code)


def _slice_end(progress: Any, now: datetime) -> datetime:
    """When the canary slice ended: its last SDDC's finish (or last update, if it never finished)."""
    ends = [p.finished_at or p.updated_at for p in progress if p is not None]
    return max(ends) if ends else now


def _read(hook: Any, sddc_id: str) -> Reading:
    """One health reading; a response we cannot trust is a reading with a problem, never healthy."""
    try:
        health = hook.get_health(sddc_id)
    except RceError as err:
        return Reading(sddc_id=sddc_id, problem=f"health unreadable: [{err.reason}] {err.message}"[:500])
    return Reading(
        sddc_id=sddc_id,
        error_rate=health.error_rate,
        p95_latency_ms=health.p95_latency_ms,
        status=health.status.value,
    )


def _promql(signal: PromQLSignal) -> tuple[list[float] | None, str | None]:
    """Run the instant query on the Prometheus behind the connection; (values, error)."""
    from airflow.providers.http.hooks.http import HttpHook

    try:
        response = HttpHook(method="GET", http_conn_id=signal.conn_id).run(
            "/api/v1/query", data={"query": signal.query}, extra_options={"timeout": 10}
        )
        body = response.json()
        if body.get("status") != "success":
            return None, f"status {body.get('status')!r}: {body.get('error', '')}"[:300]
        data = body["data"]
        result = data["result"]
        if data.get("resultType") == "scalar":
            return [float(result[1])], None
        return [float(item["value"][1]) for item in result], None
    except (AirflowException, ValueError, KeyError, TypeError, IndexError, OSError) as err:
        return None, f"{type(err).__name__}: {err}"[:300]
