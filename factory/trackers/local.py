"""The local tracker: one JSON file per ticket under ``<home>/tickets``.

The embedded default, and what every test uses. Several processes (workers, the
command line) may share one directory: every change happens under an exclusive
``flock`` on ``.lock`` and every file is replaced atomically, so readers never
lock and never see half a ticket.

Layout::

    .lock            lock file
    <ID>.json        one TrackedTicket
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from factory.errors import TicketConflict, TicketNotFound, TrackerError
from factory.models import (
    Approval,
    DiscoveredProblem,
    DiscoveryAction,
    DiscoveryRecord,
    Ticket,
    TrackedTicket,
    TrackerComment,
    TrackerStatus,
)

__all__ = ["LocalTracker"]

# Discovery keys remembered per ticket; a retried activity repeats one of the newest.
_OBSERVATIONS_KEPT = 50
_ALIASES_KEPT = 100


def _now() -> datetime:
    return datetime.now(UTC)


class LocalTracker:
    """The Tracker protocol over a directory of JSON files."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ storage

    def _path(self, ticket_id: str) -> Path:
        # Ticket ids are validated by the Standard Ticket Interface, but a lookup may come from a person.
        if not ticket_id or "/" in ticket_id or ticket_id.startswith(".") or "\0" in ticket_id:
            raise TicketNotFound(f"no ticket {ticket_id!r} in the local tracker")
        return self.root / f"{ticket_id}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, path: Path) -> TrackedTicket | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TrackerError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            return TrackedTicket.model_validate_json(text)
        except ValidationError as exc:
            raise TrackerError(f"{path} is not a valid tracked ticket: {exc.errors()[0]['msg']}") from exc

    def _write(self, tracked: TrackedTicket) -> TrackedTicket:
        path = self._path(tracked.id)
        fd, tmp = tempfile.mkstemp(prefix=f".{tracked.id}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(tracked.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tracked

    def _all(self) -> list[TrackedTicket]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*.json")):
            if path.name.startswith("."):
                continue
            tracked = self._read(path)
            if tracked is not None:
                found.append(tracked)
        return found

    def _require(self, ticket_id: str) -> TrackedTicket:
        tracked = self._read(self._path(ticket_id))
        if tracked is None:
            raise TicketNotFound(f"no ticket {ticket_id!r} in the local tracker (`factory tickets` lists them)")
        return tracked

    # ------------------------------------------------------------------ reading

    def get(self, ticket_id: str) -> TrackedTicket | None:
        try:
            return self._read(self._path(ticket_id))
        except TicketNotFound:
            return None

    def find(self, fingerprint: str) -> TrackedTicket | None:
        for tracked in self._all():
            if tracked.ticket.fingerprint == fingerprint:
                return tracked
        return None

    def _ticket_of(self, problem: DiscoveredProblem) -> TrackedTicket | None:
        """The ticket a discovered problem belongs to, read in one pass over the tickets: the one with
        its fingerprint, else the one with its id, else the oldest found under one of its aliases (the
        same problem under another fingerprint: a log group's template shifted as other lines came
        and went, or the miner's rules changed)."""
        ticket, wanted = problem.ticket, set(problem.aliases)
        by_id: TrackedTicket | None = None
        by_alias: list[TrackedTicket] = []
        for tracked in self._all():
            if tracked.ticket.fingerprint == ticket.fingerprint:
                return tracked
            if tracked.id == ticket.id:
                by_id = tracked
            elif not wanted.isdisjoint(tracked.aliases):
                by_alias.append(tracked)
        return by_id or min(by_alias, key=lambda t: (t.created_at, t.id), default=None)

    def list(
        self,
        *,
        label: str | None = None,
        source: str | None = None,
        status: TrackerStatus | None = None,
        approved: bool | None = None,
    ) -> list[TrackedTicket]:
        """Tickets matching every filter given, oldest first."""
        chosen = []
        for tracked in self._all():
            if label is not None and label not in tracked.ticket.labels:
                continue
            if source is not None and tracked.ticket.source != source:
                continue
            if status is not None and tracked.status != status:
                continue
            if approved is not None and (tracked.approval is not None) != approved:
                continue
            chosen.append(tracked)
        return sorted(chosen, key=lambda t: (t.created_at, t.id))

    # ------------------------------------------------------------------ writing

    def create(self, ticket: Ticket) -> TrackedTicket:
        with self._locked():
            if self._read(self._path(ticket.id)) is not None:
                raise TicketConflict(f"ticket {ticket.id} exists already in the local tracker")
            now = _now()
            return self._write(TrackedTicket(ticket=ticket, created_at=now, updated_at=now))

    def record(self, problem: DiscoveredProblem, observation: str) -> DiscoveryRecord:
        """Create the ticket, or update the one with its fingerprint (reopening it if closed).

        ``observation`` names this sighting (the discovery run and the problem); recording it
        twice changes nothing, so a retried activity never double-counts.
        """
        ticket = problem.ticket
        if not ticket.fingerprint:
            raise TicketConflict(f"discovered ticket {ticket.id} has no fingerprint to de-duplicate on")
        with self._locked():
            now = _now()
            existing = self._ticket_of(problem)
            if existing is None:
                tracked = TrackedTicket(
                    ticket=ticket,
                    created_at=now,
                    updated_at=now,
                    occurrences=problem.occurrences,
                    first_seen=problem.first_seen or now,
                    last_seen=problem.last_seen or now,
                    sample=problem.sample,
                    observations=[observation],
                    aliases=problem.aliases[:_ALIASES_KEPT],
                )
                self._write(tracked)
                return _record(tracked, DiscoveryAction.CREATED)
            if observation in existing.observations:
                return _record(existing, DiscoveryAction.UNCHANGED)
            reopen = existing.status == TrackerStatus.CLOSED
            # The newest evidence replaces the old; what people set (labels, approval, comments) stays.
            # Labels are discovery's only when the ticket opens again: a label a person or the night
            # shift removed (ready-for-robot once a PR is open) is not put back by the next sighting.
            labels = list(dict.fromkeys([*existing.ticket.labels, *(ticket.labels if reopen else [])]))
            refreshed = ticket.model_copy(update={"id": existing.id, "labels": labels})
            updated = existing.model_copy(
                update={
                    "ticket": refreshed,
                    "status": TrackerStatus.OPEN,
                    "updated_at": now,
                    # Sources re-read what they saw before (log files grow), so the newest count
                    # replaces the old one rather than adding to it; sightings count the runs.
                    "occurrences": problem.occurrences,
                    "sightings": existing.sightings + 1,
                    "first_seen": min(filter(None, [existing.first_seen, problem.first_seen]), default=now),
                    "last_seen": max(filter(None, [existing.last_seen, problem.last_seen, now])),
                    "sample": problem.sample or existing.sample,
                    "reopened": existing.reopened + (1 if reopen else 0),
                    "approval": None if reopen else existing.approval,
                    "observations": [*existing.observations, observation][-_OBSERVATIONS_KEPT:],
                    "aliases": list(dict.fromkeys([*problem.aliases, *existing.aliases]))[:_ALIASES_KEPT],
                }
            )
            self._write(updated)
            return _record(updated, DiscoveryAction.REOPENED if reopen else DiscoveryAction.UPDATED)

    def update(self, ticket_id: str, change: Callable[[TrackedTicket], TrackedTicket]) -> TrackedTicket:
        with self._locked():
            current = self._require(ticket_id)
            changed = change(current)
            if changed.id != current.id:
                raise TicketConflict(f"an update may not change the id of ticket {ticket_id}")
            return self._write(changed.model_copy(update={"updated_at": _now()}))

    def set_status(self, ticket_id: str, status: TrackerStatus) -> TrackedTicket:
        return self.update(ticket_id, lambda t: t.model_copy(update={"status": status}))

    def label(self, ticket_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> TrackedTicket:
        gone = set(remove)

        def change(tracked: TrackedTicket) -> TrackedTicket:
            labels = [name for name in dict.fromkeys([*tracked.ticket.labels, *add]) if name not in gone]
            return tracked.model_copy(update={"ticket": tracked.ticket.model_copy(update={"labels": labels})})

        return self.update(ticket_id, change)

    def comment(self, ticket_id: str, author: str, text: str) -> TrackedTicket:
        note = TrackerComment(author=author, at=_now(), text=text)
        return self.update(ticket_id, lambda t: t.model_copy(update={"comments": [*t.comments, note]}))

    def approve(self, ticket_id: str, by: str, at: datetime) -> TrackedTicket:
        def change(tracked: TrackedTicket) -> TrackedTicket:
            if tracked.status != TrackerStatus.OPEN:
                raise TicketConflict(f"ticket {ticket_id} is {tracked.status.value}; only open tickets can be approved")
            if tracked.approval is not None:
                return tracked
            return tracked.model_copy(update={"approval": Approval(by=by, at=at)})

        return self.update(ticket_id, change)

    def unapprove(self, ticket_id: str) -> TrackedTicket:
        return self.update(ticket_id, lambda t: t.model_copy(update={"approval": None}))

    def close(self, ticket_id: str, by: str, reason: str) -> TrackedTicket:
        def change(tracked: TrackedTicket) -> TrackedTicket:
            if tracked.status == TrackerStatus.CLOSED:
                return tracked
            note = TrackerComment(author=by, at=_now(), text=f"Closed: {reason}")
            return tracked.model_copy(
                update={"status": TrackerStatus.CLOSED, "approval": None, "comments": [*tracked.comments, note]}
            )

        return self.update(ticket_id, change)


def _record(tracked: TrackedTicket, action: DiscoveryAction) -> DiscoveryRecord:
    return DiscoveryRecord(
        ticket_id=tracked.id,
        fingerprint=tracked.ticket.fingerprint or "",
        action=action,
        title=tracked.ticket.display_title,
    )
