"""Every error the factory raises on purpose, in one place.

Each error carries a message meant for a person: what went wrong and what to do.
``permanent`` errors are not worth retrying (bad input, a refused branch, an
exhausted budget); the activity layer marks them non-retryable for Temporal.
"""

from __future__ import annotations

__all__ = [
    "BudgetExhausted",
    "BundleRejected",
    "CommandTimeout",
    "ConfigError",
    "DiffInvalid",
    "DockerUnavailable",
    "FactoryError",
    "ForgeError",
    "ForgeRequestRefused",
    "GitError",
    "ImageMissing",
    "LogInputInvalid",
    "ModelError",
    "ModelPriceUnknown",
    "ModelRequestRefused",
    "NotificationFailed",
    "PackageNameInvalid",
    "PlaybookError",
    "ProtectedBranchRefused",
    "RegistryUnreachable",
    "RemoteBranchConflict",
    "ReviewToolFailed",
    "SandboxError",
    "SandboxGone",
    "ServerUnreachable",
    "TicketConflict",
    "TicketInvalid",
    "TicketNotFound",
    "TrackerError",
    "UnknownRepo",
    "WriteRefused",
]


class FactoryError(Exception):
    """Base class: ``str(error)`` is a one-line, user-facing message."""

    permanent: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FactoryError):
    """factory.toml or a FACTORY_* variable is invalid."""

    permanent = True


class TicketInvalid(FactoryError):
    """A ticket does not match the Standard Ticket Interface."""

    permanent = True


class UnknownRepo(FactoryError):
    """``context.repo`` names no ``[repos.NAME]`` table in factory.toml."""

    permanent = True


class ServerUnreachable(FactoryError):
    """The Temporal server cannot be reached."""


class DockerUnavailable(FactoryError):
    """The Docker engine cannot be reached."""


class ImageMissing(FactoryError):
    """The sandbox image is not present in the Docker engine."""

    permanent = True


class SandboxError(FactoryError):
    """A sandbox could not be created or used."""


class SandboxGone(SandboxError):
    """The sandbox container no longer exists (destroyed, or its host restarted)."""

    permanent = True


class WriteRefused(SandboxError):
    """The sandbox could not write a file where the agent asked (read-only place, a directory, a dangling symlink)."""

    permanent = True


class CommandTimeout(SandboxError):
    """A command in the sandbox ran past its time limit and was killed."""

    permanent = True


class LogInputInvalid(FactoryError):
    """A log source for the Log Miner is missing, unreadable or not what it claims (bad JSON)."""

    permanent = True


class GitError(FactoryError):
    """A host-side git operation failed."""


class BundleRejected(GitError):
    """The commits exported from a sandbox failed verification."""

    permanent = True


class ProtectedBranchRefused(GitError):
    """A push to a protected branch was refused by the factory itself."""

    permanent = True


class RemoteBranchConflict(GitError):
    """The remote branch holds commits the factory must not overwrite (they are on the default branch)."""

    permanent = True


class ForgeError(FactoryError):
    """The forge (local or remote) refused or failed a request."""


class ForgeRequestRefused(ForgeError):
    """The forge refused the request itself (credentials, permissions, no such repository, invalid input).

    Retrying the same request cannot help, unlike a timeout, a 5xx or a rate limit.
    """

    permanent = True


class ModelError(FactoryError):
    """A model call failed."""


class ModelRequestRefused(ModelError):
    """The model provider refused the request itself (credentials, bad request, unknown model): retrying cannot help."""

    permanent = True


class ModelPriceUnknown(ModelError):
    """A cost cap is set but the model's price is unknown, so the call is refused."""

    permanent = True


class NotificationFailed(FactoryError):
    """A chat webhook did not accept a notification (never fails a ticket)."""


class BudgetExhausted(FactoryError):
    """The next model call could overshoot what is left of the ticket's budget."""

    permanent = True


class PlaybookError(ModelError):
    """The offline scripted model's playbook is missing, invalid or used up."""

    permanent = True


class DiffInvalid(FactoryError):
    """The diff of a change under review cannot be parsed as a unified diff."""

    permanent = True


class ReviewToolFailed(FactoryError):
    """A tool of the deterministic review (ruff, eslint) could not run or gave no readable answer."""


class RegistryUnreachable(FactoryError):
    """A package registry (PyPI, npm) could not answer: network error, timeout, 5xx or an unreadable reply.

    Not permanent: the registry may come back. The Hallucination Check fails closed on it
    (the dependency is "unverified", which blocks).
    """


class PackageNameInvalid(FactoryError):
    """A package name breaks the registry's naming rules, so it is never looked up."""

    permanent = True


class TrackerError(FactoryError):
    """The tracker could not read or store a ticket."""


class TicketNotFound(TrackerError):
    """No ticket with that id in the tracker."""

    permanent = True


class TicketConflict(TrackerError):
    """The tracker refused the change: the ticket exists already, or is not in a state that allows it."""

    permanent = True
