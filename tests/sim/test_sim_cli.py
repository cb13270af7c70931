"""The `rce sim` client subcommands against a running simulator."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import RCE, SimServer


def _rce(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RCE), "sim", *args], capture_output=True, text=True, timeout=30, check=False)


def test_fault_and_counters_commands(sim_server: SimServer) -> None:
    out = _rce("fault", "--url", sim_server.url, "--token", sim_server.token, '{"latency_ms": 5}')
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["latency_ms"] == 5
    assert sim_server.request("GET", "/sim/faults").json()["latency_ms"] == 5
    sim_server.request("GET", "/api/v1/sddcs/sddc-0001")
    out = _rce("counters", "--url", sim_server.url, "--token", sim_server.token)
    assert out.returncode == 0, out.stderr
    counters = json.loads(out.stdout)
    assert {"method": "GET", "route": "/api/v1/sddcs/{sddc_id}", "status": "200", "count": 1} in counters[
        "requests"
    ]
    bad = _rce("counters", "--url", sim_server.url, "--token", "wrong")
    assert bad.returncode != 0 and "401" in bad.stderr
