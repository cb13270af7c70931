"""`rce plan` as a subprocess against a real simulator: what each wave would take, checked against
the engine's own selection (`cohort_for_run`, which resolve_cohort runs), and bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rce_lib.api.models import SddcSummary
from rce_lib.ledger import Ledger
from rce_lib.plan.cohort import cohort_for_run
from rce_lib.plan.loader import load_plan

from ..conftest import RCE, SimFactory, SimServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "plan-cli-token-0123456789"
PLAN: dict[str, Any] = {
    "rollout": "plan-cli",
    "release": "1.26.0",
    "defaults": {
        "max_parallel": 2,
        "max_fail_percentage": 20,
        "gate": {"max_error_rate": 0.05, "max_p95_latency_ms": 800},
    },
    "waves": [
        {"name": "canary", "size": 4, "canary_size": 2, "selector": {"exclude_ids": ["sddc-0003"]}},
        {"name": "early", "schedule": "after:canary", "size": "25%"},
        {"name": "main", "schedule": "after:early", "size": "100%", "max_parallel": 8},
    ],
}


@pytest.fixture
def sim(sim_factory: SimFactory) -> SimServer:
    return sim_factory(size=24, token=TOKEN)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(PLAN, sort_keys=False))
    return path


def rce_plan(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "RCE_"))}
    return subprocess.run(
        [str(RCE), "plan", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, "AIRFLOW_HOME": str(tmp_path / "airflow"), **(env or {})},
    )


def inventory(sim: SimServer) -> list[SddcSummary]:
    resp = sim.request("GET", "/api/v1/sddcs?limit=100")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert not body.get("next_cursor")
    return [SddcSummary.model_validate(item) for item in body["items"]]


def upgrade_from(sim: SimServer) -> list[str]:
    resp = sim.request("GET", "/api/v1/releases/1.26.0")
    assert resp.status_code == 200, resp.text
    return list(resp.json()["upgrade_from"])


def test_plan_json_matches_the_engines_cohort_per_wave(
    sim: SimServer, plan_file: Path, tmp_path: Path
) -> None:
    # another wave holds a claim in the ledger: the engine leaves that SDDC out, so must the preview
    ledger_url = f"sqlite:///{tmp_path / 'rce_ledger.db'}"
    ledger = Ledger(ledger_url)
    ledger.claim("sddc-0004", rollout="other-rollout", wave="hotfix", run_id="manual__1")
    conn = json.dumps({"conn_type": "http", "host": sim.url, "password": TOKEN})
    proc = rce_plan(
        tmp_path,
        "--plan", str(plan_file), "--format", "json", "--ledger-url", ledger_url,
        env={"AIRFLOW_CONN_SDDC_API": conn},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    preview = json.loads(proc.stdout)
    assert preview["order"] == ["canary", "early", "main"]
    assert preview["api_url"] == sim.url

    plan, fleet, sources = load_plan(plan_file), inventory(sim), upgrade_from(sim)
    claims = ledger.active_claims()
    taken: dict[str, str] = {}
    for shown in preview["waves"]:
        wave = plan.wave(shown["wave"])
        engine = cohort_for_run(
            wave, fleet, rollout=plan.rollout, upgrade_from=sources, active_claims=claims, taken=dict(taken)
        )
        taken.update(dict.fromkeys(engine.ids, wave.name))
        assert [m["sddc_id"] for m in shown["members"]] == engine.ids, wave.name
        assert [m["sddc_id"] for m in shown["members"] if m["canary"]] == engine.canary_ids, wave.name
        assert [(e["sddc_id"], e["reason"], e["detail"]) for e in shown["excluded"]] == [
            (e.sddc_id, e.reason.value, e.detail) for e in engine.excluded
        ], wave.name
    canary = preview["waves"][0]
    assert len(canary["members"]) == 4 and sum(m["canary"] for m in canary["members"]) == 2
    reasons = {e["sddc_id"]: (e["reason"], e["detail"]) for e in canary["excluded"]}
    assert reasons["sddc-0003"] == ("EXCLUDED_BY_SELECTOR", "in exclude_ids")
    assert reasons["sddc-0004"] == ("CLAIMED_BY_OTHER_WAVE", "claimed by wave other-rollout/hotfix")
    assert reasons["sddc-0009"][0] == "UPGRADE_PATH_NOT_SUPPORTED"  # 1.24.0 in the simulator's fleet
    assert reasons["sddc-0020"][0] == "ALREADY_AT_TARGET"
    assert any(reason == "OVER_SIZE" for reason, _ in reasons.values())
    # every member with a window knows when it next opens
    windows = [
        m["maintenance_window"] for w in preview["waves"] for m in w["members"] if m["maintenance_window"]
    ]
    assert windows and all(w["opens_at"] < w["closes_at"] for w in windows)


def test_plan_table_for_one_wave_via_api_url(sim: SimServer, plan_file: Path, tmp_path: Path) -> None:
    proc = rce_plan(
        tmp_path,
        "--plan", str(plan_file), "--wave", "early", "--api-url", sim.url, "--no-ledger",
        "--now", "2026-03-02T09:00:00Z",
        env={"RCE_API_TOKEN": TOKEN},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert TOKEN not in out + proc.stderr
    assert "waves in order: canary → early → main" in out
    assert "2. wave early → 1.26.0 (schedule after:canary, after canary" in out
    assert "1. wave canary" not in out  # only the wave asked for
    assert "CLAIMED_BY_OTHER_WAVE" in out and "taken by earlier wave canary" in out
    assert "next opening" in out and "windows from Mon 2026-03-02 09:00 UTC" in out


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rce plan: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    return lines[0]


def test_plan_with_a_missing_field_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(PLAN))
    del data["waves"][1]["size"]
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(
        rce_plan(tmp_path, "--plan", str(path)), str(path), "waves[1].size", "Field required"
    )


def test_plan_with_a_duplicate_wave_is_one_line(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(PLAN))
    data["waves"][2]["name"] = "canary"
    data["waves"][2]["schedule"] = None
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(data))
    assert_one_line_error(
        rce_plan(tmp_path, "--plan", str(path)), str(path), "waves[2].name", "duplicate wave"
    )


def test_unknown_wave_is_one_line(plan_file: Path, tmp_path: Path) -> None:
    assert_one_line_error(rce_plan(tmp_path, "--plan", str(plan_file), "--wave", "nope"), "no wave 'nope'")


def test_unreachable_api_is_one_line(plan_file: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = rce_plan(tmp_path, "--plan", str(plan_file), "--api-url", url, env={"RCE_API_TOKEN": TOKEN})
    assert_one_line_error(proc, f"cannot reach the SDDC API at {url}: connection refused")
    assert TOKEN not in proc.stderr


def test_unreadable_ledger_is_one_line(sim: SimServer, plan_file: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "ledger.db"
    garbage.write_bytes(b"not sqlite at all " * 200)
    proc = rce_plan(
        tmp_path,
        "--plan", str(plan_file), "--api-url", sim.url, "--ledger-url", f"sqlite:///{garbage}",
        env={"RCE_API_TOKEN": TOKEN},
    )  # fmt: skip
    assert_one_line_error(proc, "cannot read the ledger", str(garbage))
