"""Facts about a real SDDC that several phases ask (no Airflow)."""

from __future__ import annotations

from rce_lib.api.models import Sddc
from rce_lib.operators.runtime import PhaseRun


def at_target(run: PhaseRun, sddc: Sddc) -> bool:
    """Every component and host carries the target release's builds."""
    want = run.release.components
    return (
        sddc.components.vcenter == want.vcenter
        and sddc.components.nsx == want.nsx
        and all(h.version == want.esx for h in sddc.hosts)
    )
