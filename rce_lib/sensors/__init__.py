"""Sensors: conditions a wave waits for (the canary gate)."""
