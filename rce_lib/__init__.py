"""rce: rollout engine for SDDC fleets."""
