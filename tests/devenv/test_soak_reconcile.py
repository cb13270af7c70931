"""The soak's last criterion, a dry-run reconcile sweep, against the simulator as a real server."""

from __future__ import annotations

from typing import Any

from rce_lib.devenv.soak import reconcile_dry_run
from rce_lib.operators.cohort import _enroll
from tests.conftest import SimServer


def test_the_dry_run_sweep_reads_the_api_and_names_an_sddc_that_is_gone(
    sim_server: SimServer, ledger: Any
) -> None:
    for sddc_id in ("sddc-0001", "sddc-9999"):
        _enroll(ledger, "soak", "w", sddc_id, "run-1", "1.26.0", "1.25.0")
    found = reconcile_dry_run(ledger, sim_server.url, sim_server.token, lambda _d, _r: None)
    assert [f for f in found if f.startswith("sddc-9999") and "sddc_removed" in f], found
    assert not [f for f in found if "not judged" in f], found
    reads = [r for r in sim_server.counters()["requests"] if r["route"] == "/api/v1/sddcs/{sddc_id}"]
    assert sum(r["count"] for r in reads) >= 2  # both SDDCs were read through the hook
