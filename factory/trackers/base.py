"""The Tracker protocol: where tickets wait for the factory and where discovery files them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from factory.models import (
    DiscoveredProblem,
    DiscoveryRecord,
    Ticket,
    TrackedTicket,
    TrackerStatus,
)

__all__ = ["Tracker"]


class Tracker(Protocol):
    """Create, find and update tickets; label, comment, approve.

    Every method is safe to call again with the same arguments: discovery passes an
    ``observation`` key so a retried activity counts an occurrence once.
    """

    name: str

    def get(self, ticket_id: str) -> TrackedTicket | None: ...

    def find(self, fingerprint: str) -> TrackedTicket | None: ...

    def create(self, ticket: Ticket) -> TrackedTicket: ...

    def record(self, problem: DiscoveredProblem, observation: str) -> DiscoveryRecord:
        """File a discovered problem: create it, or update (reopen if closed) the ticket with its
        fingerprint or, failing that, the oldest ticket sharing one of its aliases."""
        ...

    def update(self, ticket_id: str, change: Callable[[TrackedTicket], TrackedTicket]) -> TrackedTicket: ...

    def set_status(self, ticket_id: str, status: TrackerStatus) -> TrackedTicket: ...

    def label(self, ticket_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> TrackedTicket: ...

    def comment(self, ticket_id: str, author: str, text: str) -> TrackedTicket: ...

    def approve(self, ticket_id: str, by: str, at: datetime) -> TrackedTicket: ...

    def unapprove(self, ticket_id: str) -> TrackedTicket: ...

    def close(self, ticket_id: str, by: str, reason: str) -> TrackedTicket:
        """Close the ticket (its approval withdrawn, the reason in a comment); closed already: unchanged."""
        ...

    def list(
        self,
        *,
        label: str | None = None,
        source: str | None = None,
        status: TrackerStatus | None = None,
        approved: bool | None = None,
    ) -> list[TrackedTicket]: ...
