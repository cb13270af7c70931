"""Errors the engine raises, each with a reason code shown the same way everywhere
(task log, ledger, metric label, task failure message)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # bad input, refused before anything changes
    INVALID_PLAN = "INVALID_PLAN"
    INVALID_PARAMS = "INVALID_PARAMS"
    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    # the API said no, or said something we cannot read
    API_ERROR = "API_ERROR"
    AUTH_FAILED = "AUTH_FAILED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    CONTRACT_VIOLATION = "CONTRACT_VIOLATION"
    RETRY_BUDGET_EXHAUSTED = "RETRY_BUDGET_EXHAUSTED"
    UPGRADE_PATH_NOT_SUPPORTED = "UPGRADE_PATH_NOT_SUPPORTED"
    # the rollout itself
    PRECHECK_BLOCKED = "PRECHECK_BLOCKED"
    DOWNSTREAM_TASK_FAILED = "DOWNSTREAM_TASK_FAILED"
    DOWNSTREAM_TASK_TIMEOUT = "DOWNSTREAM_TASK_TIMEOUT"
    SDDC_NOT_READY = "SDDC_NOT_READY"
    SDDC_REMOVED = "SDDC_REMOVED"
    HOST_DISCONNECTED = "HOST_DISCONNECTED"
    POSTCHECK_UNHEALTHY = "POSTCHECK_UNHEALTHY"
    SNAPSHOT_MISSING = "SNAPSHOT_MISSING"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    CLAIMED_BY_OTHER_WAVE = "CLAIMED_BY_OTHER_WAVE"
    EMPTY_COHORT = "EMPTY_COHORT"
    # gates, budgets and brakes
    CANARY_GATE_FAILED = "CANARY_GATE_FAILED"
    GATE_INCONCLUSIVE = "GATE_INCONCLUSIVE"
    ERROR_BUDGET_EXHAUSTED = "ERROR_BUDGET_EXHAUSTED"
    KILL_SWITCH = "KILL_SWITCH"
    PROMOTION_REJECTED = "PROMOTION_REJECTED"
    ROLLBACK_UNHEALTHY = "ROLLBACK_UNHEALTHY"
    # maintenance windows
    MAINTENANCE_WINDOW_TOO_SHORT = "MAINTENANCE_WINDOW_TOO_SHORT"
    NO_MAINTENANCE_WINDOW = "NO_MAINTENANCE_WINDOW"
    # reconciliation
    DRIFT_NEEDS_HUMAN = "DRIFT_NEEDS_HUMAN"
    # the engine's own state
    LEDGER_MISCONFIGURED = "LEDGER_MISCONFIGURED"
    LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"


class RceError(Exception):
    """Base error: a reason code, a message, and whether trying again may help."""

    reason: Reason = Reason.API_ERROR

    def __init__(self, message: str, *, reason: Reason | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return f"[{self.reason.value}] {self.message}"


class InvalidIdentifier(RceError, ValueError):
    reason = Reason.INVALID_IDENTIFIER


class PlanError(RceError, ValueError):
    reason = Reason.INVALID_PLAN


class ParamsError(RceError, ValueError):
    reason = Reason.INVALID_PARAMS


class ContractViolation(RceError):
    """The API answered something the contract does not allow (bad JSON, wrong types, HTML...)."""

    reason = Reason.CONTRACT_VIOLATION


class ApiError(RceError):
    """An RFC 9457 problem answer (or a transport failure once retries are spent)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        reason: Reason | None = None,
        retryable: bool = False,
        existing_task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retryable=retryable)
        self.status = status
        self.code = code
        self.existing_task_id = existing_task_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" HTTP {self.status}" if self.status else ""
        code = f" {self.code}" if self.code else ""
        return f"[{self.reason.value}]{where}{code}: {self.message}"


class ThrottledError(ApiError):
    """429 or 503 with Retry-After: the caller must wait at least retry_after seconds."""


class PhaseFailed(RceError):
    """A phase ended for good: the downstream task failed, or the SDDC cannot go on."""

    reason = Reason.DOWNSTREAM_TASK_FAILED
