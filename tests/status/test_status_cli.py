"""`rce status` as a subprocess on a ledger populated through the Ledger API."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from rce_lib.ledger import Ledger, Phase

from ..conftest import RCE
from .conftest import DURATIONS, ROLLOUT, RUN, WAVE, Clock, run_phases

pytestmark = pytest.mark.timeout(120)


def rce_status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RCE), "status", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rce status: "), lines
    for needle in needles:
        assert needle in lines[0], lines
    return lines[0]


def test_status_table_shows_phases_failures_and_eta(status_ledger: tuple[Ledger, str, Clock]) -> None:
    _, url, _ = status_ledger
    proc = rce_status("--ledger-url", url, "--wave", WAVE, "--details")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"wave {WAVE} (rollout {ROLLOUT}, run {RUN}): 5 SDDC(s)" in out
    assert "2 succeeded" in out and "1 running" in out and "1 failed" in out
    for phase in ("precheck", "upgrade_vcenter", "done"):
        assert f"  {phase} " in out
    assert "PRECHECK_BLOCKED" in out and "disk space below 10%" in out
    assert "ETA ~" in out and "at most 2 at a time" in out
    assert "excluded at cohort resolution: ALREADY_AT_TARGET 1" in out
    # --details lists every SDDC, canary first, with where its tasks sit in the grid
    assert "sddc-0001  canary[0]" in out and "sddc-0003  bulk[1]" in out


def test_status_json_is_the_snapshot_model(status_ledger: tuple[Ledger, str, Clock]) -> None:
    _, url, _ = status_ledger
    proc = rce_status("--ledger-url", url, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (wave,) = data["waves"]
    assert wave["wave"] == WAVE and wave["total"] == 5 and wave["eta_s"] > 0


def test_watch_until_done_exits_once_every_sddc_finished(status_ledger: tuple[Ledger, str, Clock]) -> None:
    ledger, url, clock = status_ledger
    proc = subprocess.Popen(
        [str(RCE), "status", "--ledger-url", url, "--watch", "0.3", "--until-done"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    first_frame = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "rce status - ledger" in line:
                first_frame.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # the first frame, however slow the start: the changes below must come after it
        assert first_frame.wait(60), "no first frame"
        assert proc.poll() is None  # still SDDCs to go: still watching
        ledger.phase_succeeded(ROLLOUT, WAVE, "sddc-0003", RUN, Phase.UPGRADE_VCENTER)
        run_phases(ledger, clock, "sddc-0003", [Phase.UPGRADE_NSX, Phase.UPGRADE_HOSTS, Phase.POSTCHECK])
        run_phases(ledger, clock, "sddc-0005", list(DURATIONS))
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert proc.returncode == 0, err
    assert out.count("rce status - ledger") >= 2  # redrawn when something changed
    assert "finished" in out


def test_unreadable_ledger_is_one_line_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    line = assert_one_line_error(rce_status("--ledger-url", f"sqlite:///{garbage}"), str(garbage))
    assert "cannot read the ledger" in line


def test_missing_ledger_file_is_one_line_exit_2_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "rce_ledger.db"
    assert_one_line_error(rce_status("--ledger-url", f"sqlite:///{missing}"), "does not exist")
    assert not missing.exists()


def test_bad_plan_is_one_line_exit_2(status_ledger: tuple[Ledger, str, Clock], tmp_path: Path) -> None:
    _, url, _ = status_ledger
    plan = tmp_path / "rollout.yaml"
    plan.write_text("rollout: r1\nrelease: 1.26.0\nwaves:\n  - name: w1\n    size: 2\n")
    assert_one_line_error(rce_status("--ledger-url", url, "--plan", str(plan)), str(plan), "waves[0].")
