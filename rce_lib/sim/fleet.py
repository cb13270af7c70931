"""Deterministic fleet generation from a seed.

Versions follow a fixed rule so that small fleets stay useful: every 10th SDDC
(index 9, 19, ...) is at 1.24.0, every 20th (index 20, 40, ...) already at 1.26.0,
all others at 1.25.0. So a 6-SDDC fleet is all 1.25.0 and a 24-SDDC fleet has two
at 1.24.0 and one at 1.26.0. Everything else (org, name, region, labels, shape,
maintenance window) comes from random.Random(seed).
"""

from __future__ import annotations

import random

from rce_lib.sim.config import ReleaseSpec
from rce_lib.sim.model import Host, SddcRec

REGIONS = ("us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2")
TIERS = ("gold", "silver", "bronze")
ADJECTIVES = ("amber", "brisk", "cobalt", "dusky", "ember", "frost", "granite", "hazel", "ivory", "jade")
NOUNS = ("falcon", "harbor", "meadow", "summit", "canyon", "delta", "glacier", "island", "ridge", "valley")


def version_for_index(index: int, releases: list[ReleaseSpec]) -> str:
    """The rule above, falling back gracefully when fewer releases are configured."""
    ordered = [r.version for r in releases]
    if len(ordered) < 3:
        return ordered[-1]
    oldest, middle, newest = ordered[-3], ordered[-2], ordered[-1]
    if index % 20 == 0:
        return newest
    if index % 10 == 9:
        return oldest
    return middle


def generate_fleet(seed: int, size: int, releases: list[ReleaseSpec]) -> list[SddcRec]:
    """N SDDCs, ids sddc-0001..; all READY, hosts CONNECTED at their release's esx build."""
    rng = random.Random(seed)
    by_version = {r.version: r for r in releases}
    orgs = max(1, size // 8)
    fleet: list[SddcRec] = []
    for index in range(1, size + 1):
        sddc_id = f"sddc-{index:04d}"
        release = by_version[version_for_index(index, releases)]
        labels = {
            "tier": rng.choices(TIERS, weights=(2, 5, 3))[0],
            "env": "prod" if rng.random() < 0.7 else "staging",
        }
        if index % 20 == 2:
            labels["canary"] = "true"
        window: dict[str, int] | None = None
        if rng.random() >= 0.25:
            window = {
                "day_of_week": rng.randrange(7),
                "start_hour_utc": rng.randrange(24),
                "duration_hours": rng.choice((4, 6, 8, 12)),
            }
        hosts: list[Host] = []
        for c in range(1, rng.randint(1, 2) + 1):
            cluster_id = f"{sddc_id}-c{c}"
            for h in range(1, rng.randint(2, 4) + 1):
                hosts.append(
                    Host(
                        id=f"{cluster_id}-h{h}", cluster_id=cluster_id, version=release.esx, state="CONNECTED"
                    )
                )
        fleet.append(
            SddcRec(
                id=sddc_id,
                org_id=f"org-{rng.randint(1, orgs):03d}",
                name=f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{index}",
                region=rng.choice(REGIONS),
                version=release.version,
                labels=labels,
                maintenance_window=window,
                vcenter=release.vcenter,
                nsx=release.nsx,
                hosts=hosts,
            )
        )
    return fleet
