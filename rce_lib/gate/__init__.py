"""The canary gate's judgement, as plain code (no Airflow, no I/O).

`stats` compares canary and baseline readings; `evidence` turns every signal into
a `Check`, folds the checks into one `GateDecision` and renders it for the log.
The sensor (`rce_lib/sensors/canary_gate.py`) gathers the inputs and records the
decision.
"""
