"""Telemetry: structured log context (log_context), OpenTelemetry spans (tracing), and the
scope every task execution runs in (scope)."""
