"""Retry policy shared by the factory's workflows.

Permanent failures are named by their ``FactoryError`` class (the activity
boundary uses the class name as the failure type), so no retry is wasted on an
error no retry can fix.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

__all__ = ["ACTIVITY_RETRY", "PERMANENT_ERRORS", "failure_reason"]

PERMANENT_ERRORS = [
    "BudgetExhausted",
    "BundleRejected",
    "CommandTimeout",
    "ConfigError",
    "DiffInvalid",
    "ImageMissing",
    "ModelPriceUnknown",
    "ModelRequestRefused",
    "PackageNameInvalid",
    "PlaybookError",
    "ProtectedBranchRefused",
    "RemoteBranchConflict",
    "SandboxGone",
    "TicketInvalid",
    "UnknownRepo",
    "WriteRefused",
]

ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=PERMANENT_ERRORS,
)


def failure_reason(err: BaseException) -> str:
    """The innermost application error of a failure chain (activity, child workflow), as one line."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}" if cause.type else cause.message
    return str(getattr(err, "cause", None) or err)
