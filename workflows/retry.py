"""Retry policy shared by the factory's workflows.

Permanent failures are named by their ``FactoryError`` class (the activity
boundary uses the class name as the failure type), so no retry is wasted on an
error no retry can fix.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

__all__ = ["ACTIVITY_RETRY", "PERMANENT_ERRORS"]

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
