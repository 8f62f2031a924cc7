"""The local tracker: tickets as JSON files, de-duplicated by fingerprint, safe for several processes."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from factory.errors import TicketConflict, TicketNotFound
from factory.models import (
    READY_LABEL,
    DiscoveredProblem,
    DiscoveryAction,
    Ticket,
    TicketContext,
    TrackerStatus,
)
from factory.trackers import LocalTracker

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _problem(
    fingerprint: str = "fp-1", *, occurrences: int = 1, sample: str | None = None, **fields: object
) -> DiscoveredProblem:
    ticket = Ticket(
        id=f"LOG-{fingerprint}",
        type="bug",
        priority="medium",
        context=TicketContext(repo="calculator", error_logs=sample or ""),
        acceptance_criteria=["the error no longer occurs"],
        title=str(fields.get("title", "ZeroDivisionError in mean")),
        labels=[READY_LABEL],
        source="log-miner",
        fingerprint=fingerprint,
    )
    return DiscoveredProblem(
        ticket=ticket,
        occurrences=occurrences,
        first_seen=fields.get("first_seen", T0),  # type: ignore[arg-type]
        last_seen=fields.get("last_seen", T0),  # type: ignore[arg-type]
        sample=sample,
        aliases=list(fields.get("aliases", [])),  # type: ignore[call-overload]
    )


def test_the_same_problem_found_again_updates_the_ticket_instead_of_creating_a_second(tmp_path: Path) -> None:
    """A second sighting replaces the occurrence count, counts the sighting, moves last_seen, keeps the newest
    sample; still one ticket."""
    tracker = LocalTracker(tmp_path)
    first = tracker.record(_problem(occurrences=3, sample="old trace"), "run-1:fp-1")
    later = T0 + timedelta(days=1)
    second = tracker.record(
        _problem(occurrences=2, sample="new trace", first_seen=later, last_seen=later, title="newer title"),
        "run-2:fp-1",
    )

    assert (first.action, second.action) == (DiscoveryAction.CREATED, DiscoveryAction.UPDATED)
    tickets = tracker.list()
    assert len(tickets) == 1
    tracked = tickets[0]
    assert (tracked.occurrences, tracked.sightings) == (2, 2)
    assert tracked.first_seen == T0
    assert tracked.last_seen is not None and tracked.last_seen >= later
    assert tracked.sample == "new trace"
    assert tracked.ticket.title == "newer title"


def test_a_problem_under_a_new_fingerprint_sharing_an_alias_updates_the_oldest_such_ticket(tmp_path: Path) -> None:
    """No ticket has the fingerprint, but tickets share an alias: the oldest of them is the problem's;
    its aliases grow with the new ones. Without a shared alias a new fingerprint is a new ticket."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem("fp-1", aliases=["a", "b"]), "run-1:fp-1")
    tracker.record(_problem("fp-2", aliases=["b", "c"]), "run-1:fp-2")  # shares "b": the same problem
    assert [t.id for t in tracker.list()] == ["LOG-fp-1"]
    tracker.record(_problem("fp-3", aliases=["x"]), "run-1:fp-3")
    moved = tracker.record(_problem("fp-4", occurrences=7, aliases=["c", "x"]), "run-2:fp-4")
    assert moved.action == DiscoveryAction.UPDATED and moved.ticket_id == "LOG-fp-1"
    first = tracker.get("LOG-fp-1")
    assert first is not None and first.occurrences == 7 and first.ticket.fingerprint == "fp-4"
    assert first.aliases == ["c", "x", "b", "a"]
    # The ticket is found under its newest fingerprint, and under an alias seen at any time.
    assert tracker.record(_problem("fp-4", aliases=[]), "run-3:fp-4").ticket_id == "LOG-fp-1"
    assert tracker.record(_problem("fp-5", aliases=["a"]), "run-3:fp-5").ticket_id == "LOG-fp-1"
    assert [t.id for t in tracker.list()] == ["LOG-fp-1", "LOG-fp-3"]


def test_recording_the_same_sighting_twice_counts_it_once(tmp_path: Path) -> None:
    """A retried filing (same observation key) changes nothing."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(occurrences=4), "run-1:fp-1")
    again = tracker.record(_problem(occurrences=4), "run-1:fp-1")

    assert again.action == DiscoveryAction.UNCHANGED
    tracked = tracker.get("LOG-fp-1")
    assert tracked is not None and (tracked.occurrences, tracked.sightings) == (4, 1)


def test_a_closed_ticket_that_recurs_is_reopened_not_duplicated(tmp_path: Path) -> None:
    """Recurrence reopens the closed ticket, counts the reopening and drops a stale approval."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(), "run-1:fp-1")
    tracker.approve("LOG-fp-1", "alice", T0)
    tracker.set_status("LOG-fp-1", TrackerStatus.CLOSED)

    record = tracker.record(_problem(), "run-2:fp-1")

    assert record.action == DiscoveryAction.REOPENED
    [tracked] = tracker.list()
    assert tracked.status == TrackerStatus.OPEN
    assert tracked.reopened == 1
    assert tracked.approval is None


def test_closing_withdraws_the_approval_records_why_and_a_recurrence_reopens_it(tmp_path: Path) -> None:
    """close() closes once (a second close changes nothing), drops the approval, comments the reason;
    the next sighting reopens the ticket and counts it."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(), "run-1:fp-1")
    tracker.approve("LOG-fp-1", "ana", T0)
    closed = tracker.close("LOG-fp-1", "bob", "fix merged in #7")
    assert (closed.status, closed.approval) == (TrackerStatus.CLOSED, None)
    assert [(c.author, c.text) for c in closed.comments] == [("bob", "Closed: fix merged in #7")]
    assert tracker.close("LOG-fp-1", "bob", "again").comments == closed.comments

    reopened = tracker.record(_problem(), "run-2:fp-1")
    assert reopened.action == DiscoveryAction.REOPENED
    tracked = tracker.get("LOG-fp-1")
    assert tracked is not None and (tracked.status, tracked.reopened) == (TrackerStatus.OPEN, 1)
    with pytest.raises(TicketNotFound):
        tracker.close("LOG-nope", "bob", "fixed")


def test_what_people_added_survives_a_new_sighting(tmp_path: Path) -> None:
    """Labels, comments and approval set by people stay when discovery refreshes the ticket."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(), "run-1:fp-1")
    tracker.label("LOG-fp-1", add=["team-payments"])
    tracker.comment("LOG-fp-1", "bob", "seen in prod too")
    tracker.approve("LOG-fp-1", "alice", T0)

    tracker.record(_problem(), "run-2:fp-1")

    tracked = tracker.get("LOG-fp-1")
    assert tracked is not None
    assert set(tracked.ticket.labels) == {READY_LABEL, "team-payments"}
    assert [c.text for c in tracked.comments] == ["seen in prod too"]
    assert tracked.approval is not None and tracked.approval.by == "alice"


def test_list_filters_by_label_source_status_and_approval(tmp_path: Path) -> None:
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem("a"), "r:a")
    tracker.record(_problem("b"), "r:b")
    tracker.create(
        Ticket(
            id="ENG-1",
            type="feature",
            priority="low",
            context=TicketContext(repo="calculator"),
            acceptance_criteria=["done"],
        )
    )
    tracker.approve("LOG-b", "alice", T0)
    tracker.set_status("LOG-a", TrackerStatus.CLOSED)

    assert [t.id for t in tracker.list(label=READY_LABEL)] == ["LOG-a", "LOG-b"]
    assert [t.id for t in tracker.list(source="log-miner", status=TrackerStatus.OPEN)] == ["LOG-b"]
    assert [t.id for t in tracker.list(approved=True)] == ["LOG-b"]
    assert [t.id for t in tracker.list(approved=False)] == ["LOG-a", "ENG-1"]


def test_bad_requests_are_refused_with_the_reason(tmp_path: Path) -> None:
    """Unknown ids, duplicates, approving a closed ticket and path-like ids are refused."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(), "r:fp-1")
    with pytest.raises(TicketNotFound, match="NOPE-1"):
        tracker.approve("NOPE-1", "alice", T0)
    with pytest.raises(TicketConflict, match="exists already"):
        tracker.create(_problem().ticket)
    tracker.set_status("LOG-fp-1", TrackerStatus.CLOSED)
    with pytest.raises(TicketConflict, match="closed"):
        tracker.approve("LOG-fp-1", "alice", T0)
    assert tracker.get("../etc/passwd") is None
    with pytest.raises(TicketNotFound):
        tracker.comment("../x", "eve", "hi")


def _record_many(root: str, worker: int) -> None:
    tracker = LocalTracker(Path(root))
    for i in range(20):
        tracker.record(_problem("shared"), f"worker-{worker}:{i}")


def test_several_processes_recording_at_once_lose_no_update(tmp_path: Path) -> None:
    """Four processes record 20 sightings each of one problem: one ticket, 80 sightings."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0

    [tracked] = LocalTracker(tmp_path).list()
    assert tracked.sightings == 80


def test_a_label_taken_off_is_not_put_back_by_the_next_sighting_but_a_reopening_restores_it(tmp_path: Path) -> None:
    """Once ready-for-robot is swapped for pr-open, sightings keep it off; a recurrence after closing adds it back."""
    tracker = LocalTracker(tmp_path)
    tracker.record(_problem(), "run-1:fp-1")
    tracker.label("LOG-fp-1", add=["pr-open"], remove=[READY_LABEL])

    tracker.record(_problem(), "run-2:fp-1")
    tracked = tracker.get("LOG-fp-1")
    assert tracked is not None and tracked.ticket.labels == ["pr-open"]

    tracker.set_status("LOG-fp-1", TrackerStatus.CLOSED)
    tracker.record(_problem(), "run-3:fp-1")
    tracked = tracker.get("LOG-fp-1")
    assert tracked is not None and set(tracked.ticket.labels) == {"pr-open", READY_LABEL}
