"""The wave DAG's documentation as the UI shows it: the DAG's `doc_md` and each task's `doc_md`
(task details). Plain strings built from the plan at parse time: no I/O, nothing imported."""

from __future__ import annotations

from rce_lib.plan.model import RolloutPlan, Wave

_RESUME = """
**Resume:** fix the cause, then clear this task (*Clear* → *Only failed*): it re-reads the SDDC,
skips what is done and re-attaches to work still running; nothing is applied twice.
"""

_KILL = """
**Kill switch:** the Variable `rce_kill_switch` or `rce_kill_switch_{wave}` (its value is shown as
the reason) fails new work with `KILL_SWITCH`; delete it and clear the failed tasks to resume.
"""

_PHASE = """
#### `{task}` (one SDDC: {what})

Pool `{pool}`. It reads the SDDC first: {noun} already done → success (`phase_skipped`); a
downstream task still running → re-attach; otherwise it starts one (deterministic
Idempotency-Key) and waits deferred. A downstream verdict fails it for good (then `rollback`); an
error of ours is retried (`retries=2`), else the SDDC stays as it is, for you to clear.
"""

# The task docs stay short on purpose: every task of the serialized DAG carries its own, and the
# triggerer is sent the whole serialized DAG for every task it starts. The DAG's doc says more.


def dag_doc(plan: RolloutPlan, wave: Wave) -> str:
    """The DAG's doc_md: what the wave does, its knobs, and how to resume, stop and preview it."""
    approval = (
        f"then **`approve_promotion`** waits for a human (*Required Actions*: Approve / Reject; "
        f"timeout {wave.approval.timeout_seconds} s → {wave.approval.on_timeout}), "
        if wave.approval
        else ""
    )
    after = f" It starts by itself when wave `{wave.after}` is promoted." if wave.after else ""
    return f"""
### Wave `{wave.name}` of rollout `{plan.rollout}`

Upgrades the SDDCs selected by the plan to **{wave.release}** (or the `target_version` you give).{after}

1. `resolve_cohort` picks the SDDCs from the **live inventory** (skipping those already at the
   target, on an unsupported upgrade path, not READY, excluded by the selector, over the wave size
   or claimed by another wave: each with its reason in the log) and claims them in the ledger.
2. Its first {wave.canary_size} SDDC(s) are the **canary slice** (group `canary`); each SDDC runs
   `precheck → snapshot → upgrade_vcenter → upgrade_nsx → upgrade_hosts → postcheck`, and
   `rollback` restores it from its snapshot if a phase failed for good.
3. **`canary_gate`** bakes {wave.bake_seconds} s, then judges the slice on failures, health, phase
   latency and a comparison with SDDCs not yet upgraded; {approval}only on PASS does the rest
   (group `bulk`) run. On FAIL, `canary_rollback` restores the canary slice; nothing else is touched.
4. `wave_summary` reports every SDDC and gives the verdict; a run with no more than
   {wave.max_fail_percentage:g}% of its cohort failed emits `rce://waves/{wave.name}/promoted`
   (the `after:` waves start on it). Past that budget, no new SDDC starts (`ERROR_BUDGET_EXHAUSTED`).

**Dry run** (`dry_run: true`): `resolve_cohort` logs the preview (the same as
`rce plan --wave {wave.name}`: cohort, canary slice, exclusions and maintenance windows) as
markdown and as the XCom `preview`; nothing is claimed and no SDDC is touched.

**Watch it:** `rce status --wave {wave.name} --watch` (phases, failures, ETA), or `/rce/` on the
api-server.

**Resume:** clear the failed task (or the whole SDDC group) in the grid: each phase continues from
where the SDDC really is (it re-reads the SDDC, skips what is done, re-attaches to work still
running; no step is applied twice). A failed gate is cleared to judge again only if it crashed.

**Kill switch:** set the Variable `rce_kill_switch` (every wave) or `rce_kill_switch_{wave.name}`:
no new phase starts; delete it and clear the failed tasks to resume.

Size {wave.size}, canary {wave.canary_size}, max_parallel {wave.max_parallel},
max_fail_percentage {wave.max_fail_percentage:g}, bake {wave.bake_seconds} s,
schedule `{wave.schedule or "manual"}`.
"""


def task_docs(wave: Wave) -> dict[str, str]:
    """doc_md of each task of the wave DAG, by task id (group tasks by their id inside the group)."""
    kill = _KILL.format(wave=wave.name)

    def phase(task: str, what: str, pool: str, noun: str) -> str:
        return _PHASE.format(task=task, what=what, pool=pool, noun=noun) + _RESUME + kill

    approval = (
        f"Timeout {wave.approval.timeout_seconds} s: then `{wave.approval.on_timeout}`."
        if wave.approval
        else ""
    )
    return {
        "resolve_cohort": """
#### `resolve_cohort`

Reads the rollout plan and the **live inventory** (GET only), selects the wave's SDDCs (selector,
exclusions, size, `sddc_ids` / `max_parallel` params) with the same function as `rce plan`, claims
them in the ledger and enrolls each (a new run keeps what an earlier run learnt, so it resumes).
Pushes the `canary` and `bulk` slices. Every SDDC left out is logged with its reason and kept in
the ledger event `cohort_resolved` (`excluded`).

**Dry run:** logs the preview as markdown (cohort, canary slice, exclusions, next maintenance
windows) and pushes it as the XComs `preview` (JSON) and `preview_markdown`; claims nothing.

**Resume:** clear it: it resolves again from the live inventory and takes over its own claims.
""",
        "canary_slice": "Hands the canary slice to group `canary` (mapped over it). Nothing to resume.",
        "bulk_slice": "Hands the rest of the cohort to group `bulk` (mapped over it). Nothing to resume.",
        "precheck": phase("precheck", "the API's upgrade precheck", "rce_vcenter", "precheck")
        + f"""
**Admission, first:** the SDDC's first phase takes a slot among the wave's `max_parallel`
({wave.max_parallel}) SDDCs in flight in the ledger, or waits for one deferred (holding no pool
slot). Before that it checks the kill switch and the error budget: past
{wave.max_fail_percentage:g}% failed, the SDDC is skipped with `ERROR_BUDGET_EXHAUSTED`.
""",
        "snapshot": phase("snapshot", "a snapshot to roll back to", "rce_vcenter", "snapshot"),
        "upgrade_vcenter": phase(
            "upgrade_vcenter", "vCenter to the target build", "rce_vcenter", "vCenter upgrade"
        ),
        "upgrade_nsx": phase("upgrade_nsx", "NSX to the target build", "rce_nsx", "NSX upgrade"),
        "upgrade_hosts": phase(
            "upgrade_hosts",
            "every ESXi host, one host per cluster at a time: enter maintenance, upgrade, exit",
            "rce_esx",
            "host upgrade",
        ),
        "postcheck": phase(
            "postcheck",
            f"health within error rate {wave.gate.max_error_rate} "
            f"and p95 {wave.gate.max_p95_latency_ms:g} ms",
            "rce_vcenter",
            "check",
        ),
        "rollback": """
#### `rollback` (one SDDC; trigger rule `one_failed`)

Restores the SDDC from its snapshot when a phase failed **because the downstream said so**, then
checks it is healthy again. A failure of our own infrastructure does not roll back: the SDDC stays
as it is so that clearing the failed phase resumes it. Not stopped by the kill switch.
"""
        + _RESUME,
        "canary_gate": f"""
#### `canary_gate` (deferrable sensor)

After the canary slice ends it bakes {wave.bake_seconds} s in the triggerer, sampling health every
{wave.gate.sample_interval_seconds} s, then judges: failure rate, health thresholds, phase latency,
and the canary vs the SDDCs not yet upgraded (Mann-Whitney U). PASS lets the bulk run; FAIL
(`CANARY_GATE_FAILED`, or `GATE_INCONCLUSIVE` after holding) runs `canary_rollback`. Every
judgement is in the log and the ledger event `gate_decision`.

**Resume:** a gate that *decided* FAIL must not be cleared to try again (fix the release and start
a new run); a gate that crashed decided nothing: clear it to judge again.
""",
        "canary_rollback": """
#### `canary_rollback` (one canary SDDC; trigger rule `one_failed` on the gate)

Acts only on a recorded FAIL decision: restores every canary SDDC that changed from its snapshot
and checks it is healthy. Clear it to retry a rollback that failed.
""",
        "approve_promotion": f"""
#### `approve_promotion`

A human approves the canary's evidence (shown here) under *Required Actions*: Approve lets the bulk
run; Reject fails the run with `PROMOTION_REJECTED` (the canary stays upgraded; the decision is in
the ledger). {approval}
""",
        "wave_summary": f"""
#### `wave_summary` (trigger rule `all_done`)

Reports where every SDDC of the run stands (log and ledger event `wave_summary`) and decides: the
run succeeds and emits `rce://waves/{wave.name}/promoted` only if the gate passed, nothing was held
by the kill switch, every SDDC ended and no more than {wave.max_fail_percentage:g}% failed. A dry
run ends SKIPPED (never promoted). Clear it after resuming SDDCs to judge the run again.
""",
    }
