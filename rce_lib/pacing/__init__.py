"""Adaptive concurrency per downstream service (AIMD), shared by every worker through the ledger.

Airflow pools are the static ceiling on in-flight work per service: the engine copies
their sizes into the ledger and never grants a slot above them, wherever a phase runs
(rce_lib.airflow_support.pool_ceilings). When a service
pushes back for a while (429/503 to our starts), the engine lowers its own limit on
that service multiplicatively and raises it additively as starts succeed again, so
the pressure stops instead of being retried into. See `policy` (the arithmetic) and
`store` (the shared state and the slots) and `wakeup` (a slot given back wakes a waiter).
"""
