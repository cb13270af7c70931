"""The batch-serial baseline driver against a real simulator process (no Airflow).

Small fleets at a high time scale (20000: a vCenter upgrade lasts 0.14 s) unless a test needs slow tasks.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from rce_lib.devenv.bench_baseline import run_baseline, sim_connection

SOURCE, TARGET = "1.25.0", "1.26.0"


def _tasks(server: Any, sddc_id: str) -> list[dict[str, Any]]:
    resp = server.request("GET", f"/api/v1/sddcs/{sddc_id}/tasks?limit=200")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_batches_run_one_after_the_other_and_upgrade_every_sddc(sim_factory: Any) -> None:
    server = sim_factory(size=5, time_scale=20000)
    server.reset_counters()
    with sim_connection(server.url, server.token) as conn_id:
        result = run_baseline(
            batch_size=2, target_version=TARGET, source_version=SOURCE, conn_id=conn_id, poll_s=0.05
        )

    ids = [f"sddc-{i:04d}" for i in range(1, 6)]
    assert result.state == "done"
    assert (result.sddcs, result.upgraded, result.failed) == (5, 5, {})
    assert [b.sddc_ids for b in result.batches] == [ids[0:2], ids[2:4], ids[4:5]]
    assert result.makespan_s == pytest.approx(result.batches[-1].ended_s, abs=0.01)

    state = {s["id"]: s for s in server.state()["sddcs"]}
    hosts = {i: len(state[i]["hosts"]) for i in ids}
    for sddc_id in ids:
        sddc = server.sddc(sddc_id)
        assert sddc["version"] == TARGET
        assert {h["state"] for h in sddc["hosts"]} == {"CONNECTED"}

    # each batch's first downstream task starts after the slowest member of the previous one ended
    for prev, nxt in zip(result.batches, result.batches[1:], strict=False):
        prev_end = max(_ts(t["updated_at"]) for i in prev.sddc_ids for t in _tasks(server, i))
        next_start = min(_ts(t["created_at"]) for i in nxt.sddc_ids for t in _tasks(server, i))
        assert next_start >= prev_end

    # one start per task: precheck, snapshot, vCenter, NSX, three per host; nothing doubled
    counters = server.counters()
    assert counters["mutating_calls"] == sum(4 + 3 * h for h in hosts.values())
    assert counters["duplicate_starts"]["count"] == 0
    assert counters["retry_after_violations"]["count"] == 0


def test_capacity_refusals_are_waited_out_with_retry_after(sim_factory: Any) -> None:
    """NSX capacity 1, a batch of 3: two of the three NSX starts meet 503 + Retry-After."""
    server = sim_factory(size=3, time_scale=20000, config={"capacity": {"nsx": 1}})
    server.reset_counters()
    with sim_connection(server.url, server.token) as conn_id:
        result = run_baseline(
            batch_size=3, target_version=TARGET, source_version=SOURCE, conn_id=conn_id, poll_s=0.05
        )

    assert (result.upgraded, result.failed) == (3, {})
    counters = server.counters()
    assert counters["capacity_503"]["nsx"] >= 1
    assert counters["concurrent"]["nsx"]["peak"] == 1
    assert counters["retry_after_violations"]["count"] == 0
    assert counters["duplicate_starts"]["count"] == 0


def test_a_failing_sddc_is_counted_and_its_batch_goes_on(sim_factory: Any) -> None:
    server = sim_factory(size=4, time_scale=20000)
    server.faults(fail_sddc_ids=["sddc-0002"], fail_task_types=["UPGRADE_NSX"], task_failure_retryable=False)
    with sim_connection(server.url, server.token) as conn_id:
        result = run_baseline(
            batch_size=2, target_version=TARGET, source_version=SOURCE, conn_id=conn_id, poll_s=0.05
        )

    assert result.upgraded == 3
    assert list(result.failed) == ["sddc-0002"]
    assert "UPGRADE_NSX" in result.failed["sddc-0002"]
    assert len(result.batches) == 2
    assert server.sddc("sddc-0001")["version"] == TARGET


def test_timeout_stops_the_baseline_and_reports_what_was_left(sim_factory: Any) -> None:
    server = sim_factory(size=4, time_scale=60)  # a vCenter upgrade takes 45 s here
    with sim_connection(server.url, server.token) as conn_id:
        result = run_baseline(
            batch_size=2,
            target_version=TARGET,
            source_version=SOURCE,
            conn_id=conn_id,
            poll_s=0.05,
            timeout_s=1.5,
        )

    assert result.state == "timeout"
    assert result.upgraded == 0
    assert result.failed["sddc-0001"].startswith("stopped")
    assert result.failed["sddc-0003"] == "not started (timeout)"
    assert result.makespan_s < 10


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        run_baseline(batch_size=0, target_version=TARGET, source_version=SOURCE, sddc_ids=[])
    with pytest.raises(ValueError, match="poll_s"):
        run_baseline(batch_size=1, target_version=TARGET, source_version=SOURCE, sddc_ids=[], poll_s=0)


def test_the_benchs_baseline_phase_starts_its_own_simulator_and_reports(tmp_path: Path) -> None:
    """`rce bench`'s baseline step without Airflow: a second simulator from the run's config,
    the driver, the counters, and the table's baseline rows with the speed-up."""
    from rce_lib.devenv import bench
    from rce_lib.devenv.bench_model import BenchSettings

    bs = BenchSettings(sddcs=3, time_scale=20000, baseline_batch=2)
    sim_path, _plan, _pools, settings = bench._write_inputs(tmp_path, bs)
    groups: list[Any] = []
    try:
        b = bench._baseline(tmp_path, bs, settings, sim_path, groups)
    finally:
        for group in groups:
            group.stop()
    assert (b["state"], b["sddcs"], b["upgraded"], b["failed"], b["batches"]) == ("done", 3, 3, 0, 2)
    assert b["batch_size_rule"] == "--baseline-batch"
    assert b["duplicate_starts"] == b["retry_after_violations"] == 0
    assert b["api"]["mutating_calls"] > 3 * 4
    assert 0 < b["ideal_s"] <= b["makespan_s"]
    assert (tmp_path / "baseline" / "logs" / "simulator.log").exists()

    result = bench.summarize(
        n=3,
        time_scale=bs.time_scale,
        settings=settings,
        state="success",
        run={},
        tis=[],
        t_trigger=0.0,
        t_seen=b["makespan_s"] / 2,
        counters={},
        fleet={},
        cohort=[],
        tasks=[],
        cpu_s=1.0,
        cpu_procs=1,
        sim_cpu_s=0.1,
        peak_rss_bytes=2**30,
        peak_pss_bytes=2**29,
    )
    result["baseline"] = b
    result["speedup"] = bench._speedup(b, result["makespan_s"]["trigger_to_last_sddc_done"])
    assert result["speedup"] == pytest.approx(2.0)
    table = bench.render_table(result)
    assert "NON-STANDARD SETTINGS" in table
    assert "time scale 20000 (standard 60)" in table
    assert "SPEED-UP (baseline makespan / engine makespan)" in table
    assert "2.00x" in table
    assert "PSS 512 MiB, RSS 1024 MiB" in table
    assert bench._speedup({**b, "state": "timeout"}, 10.0) is None
