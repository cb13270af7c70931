"""`rce exporter` as a real process: serves the ledger's metrics, refuses bad settings, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rce_lib.errors import ParamsError
from rce_lib.ledger import Ledger, Phase
from rce_lib.metrics.exporter import phase_max_seconds

RCE = [sys.executable, "-m", "rce_lib.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serves_the_ledger_over_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = Ledger(url)
    ledger.phase_started("r", "w1", "sddc-1", "run", Phase.PRECHECK)
    ledger.phase_succeeded("r", "w1", "sddc-1", "run", Phase.PRECHECK)
    port = free_port()
    env = {**os.environ, "RCE_PHASE_MAX_SECONDS": '{"upgrade_nsx": 42}'}
    proc = subprocess.Popen(
        [*RCE, "exporter", "--port", str(port), "--addr", "127.0.0.1", "--ledger-url", url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }
        assert samples[("rce_ledger_up", ())] == 1
        key = (
            "rce_phase_total",
            (("outcome", "succeeded"), ("phase", "precheck"), ("reason", "none"), ("wave", "w1")),
        )
        assert samples[key] == 1
        assert samples[("rce_phase_max_seconds", (("phase", "upgrade_nsx"),))] == 42
        assert not any(name.startswith(("process_", "python_")) for name, _ in samples)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"upgrade_nsx": 0}', "must be > 0"),
        ('{"teleport": 5}', "unknown phase 'teleport'"),
        ("[1, 2]", "JSON object"),
        ('{"precheck": "soon"}', "JSON object"),
    ],
)
def test_bad_phase_bounds_are_refused_by_name(raw: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        phase_max_seconds(raw)


def test_the_cli_refuses_bad_settings_before_serving(tmp_path: Path) -> None:
    env = {**os.environ, "RCE_PHASE_MAX_SECONDS": '{"teleport": 5}'}
    done = subprocess.run(
        [*RCE, "exporter", "--port", str(free_port()), "--ledger-url", f"sqlite:///{tmp_path}/l.db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "RCE_PHASE_MAX_SECONDS: unknown phase 'teleport'" in done.stderr
    assert "Traceback" not in done.stderr
    bad_port = subprocess.run(
        [*RCE, "exporter", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert bad_port.returncode != 0 and "--port must be 1..65535" in bad_port.stderr
