"""The night shift's pure logic and its command line: time of day in a zone, the cap, the batch, the report."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import starter
from factory.config import load_settings
from factory.errors import ConfigError, FactoryError
from factory.models import (
    READY_LABEL,
    NightBudget,
    NightReport,
    NightTicketOutcome,
    NightTicketState,
    Priority,
    PullRequestRef,
    Ticket,
    TrackerStatus,
    parse_ticket,
)
from factory.night_shift import (
    PR_OPEN_LABEL,
    apply_outcome,
    approval_problem,
    next_occurrence,
    night_of,
    parse_clock,
    read_report,
    render_report,
    report_note,
    select_batch,
    write_report,
)
from factory.schedules import declared_schedule, declared_schedules
from factory.trackers import LocalTracker
from tests.conftest import EXAMPLE_TICKET, copy_playbook, write_config

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def example(ticket_id: str, priority: Priority = Priority.MEDIUM, labels: list[str] | None = None) -> Ticket:
    ticket = parse_ticket(EXAMPLE_TICKET.read_text())
    return ticket.model_copy(update={"id": ticket_id, "priority": priority, "labels": labels or [READY_LABEL]})


# -- time of day in a zone --------------------------------------------------------------------


def test_next_occurrence_is_the_wall_clock_time_in_the_zone_expressed_in_utc() -> None:
    """19:00 in Berlin (UTC+1 in winter) after noon UTC is 18:00 UTC the same day; after it, the next day."""
    assert next_occurrence(T0, "19:00", "Europe/Berlin") == datetime(2025, 3, 1, 18, 0, tzinfo=UTC)
    assert next_occurrence(T0.replace(hour=18), "19:00", "Europe/Berlin") == datetime(2025, 3, 2, 18, 0, tzinfo=UTC)
    assert next_occurrence(T0, "08:00", "UTC") == datetime(2025, 3, 2, 8, 0, tzinfo=UTC)


def test_next_occurrence_follows_daylight_saving_time() -> None:
    """08:00 in New York is 13:00 UTC before the March change and 12:00 UTC after it."""
    before = datetime(2025, 3, 8, 14, 0, tzinfo=UTC)  # Saturday; the clocks change on Sunday 9 March
    assert next_occurrence(before, "08:00", "America/New_York") == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
    assert next_occurrence(before - timedelta(days=1), "08:00", "America/New_York") == datetime(
        2025, 3, 8, 13, 0, tzinfo=UTC
    )


def test_a_wall_time_skipped_by_spring_forward_happens_just_after_the_gap() -> None:
    """02:30 does not exist in Berlin on 30 March 2025; the occurrence is 03:30 local (01:30 UTC)."""
    after = datetime(2025, 3, 29, 12, 0, tzinfo=UTC)
    assert next_occurrence(after, "02:30", "Europe/Berlin") == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)


def test_the_night_is_the_start_date_in_the_zone() -> None:
    """A night shift starting 23:30 UTC on 1 March is the night of 2 March in Tokyo."""
    assert night_of(datetime(2025, 3, 1, 23, 30, tzinfo=UTC), "Asia/Tokyo") == "2025-03-02"
    assert night_of(datetime(2025, 3, 1, 23, 30, tzinfo=UTC), "UTC") == "2025-03-01"


def test_bad_times_and_zones_are_refused_with_the_reason(tmp_path: Path) -> None:
    """A time that is not HH:MM or a zone that is not an IANA name is a configuration error naming it."""
    with pytest.raises(ConfigError, match="not a time of day"):
        parse_clock("7pm")
    with pytest.raises(ConfigError, match=r"night_shift\.time_zone"):
        load_settings(write_config(tmp_path, '[night_shift]\ntime_zone = "Mars/Olympus"\n'))
    with pytest.raises(ConfigError, match=r"night_shift\.start"):
        load_settings(write_config(tmp_path, '[night_shift]\nstart = "25:00"\n'))
    settings = load_settings(write_config(tmp_path, '[night_shift]\ncost_cap_usd = "none"\nmax_concurrent = 3\n'))
    assert settings.night_shift.cost_cap_usd is None and settings.night_shift.max_concurrent == 3


# -- the per-night cost cap ------------------------------------------------------------------


def test_a_ticket_starts_only_if_spent_plus_running_caps_plus_its_cap_fit_the_night() -> None:
    """Cap $10: with $2 spent and a $5 ticket running, a $3 ticket starts, a $4 one waits, a $9 one is deferred."""
    budget = NightBudget(cap_usd=10, spent_usd=2, running={"A": 5})
    assert budget.decide(3) == "start"
    assert budget.decide(4) == "wait"
    assert budget.decide(9) == "defer"
    assert "$9.00" in budget.defer_reason(9)


def test_a_finished_ticket_frees_its_cap_and_adds_what_it_spent() -> None:
    """When the running ticket ends having spent $1.50, its $5 cap is released and the spend counts."""
    budget = NightBudget(cap_usd=10, spent_usd=2)
    budget.started("A", 5)
    budget.finished("A", 1.5)
    assert budget.running == {} and budget.spent_usd == 3.5
    assert budget.decide(6.5) == "start" and budget.decide(6.6) == "defer"


def test_without_a_night_cap_everything_starts_and_an_uncapped_ticket_is_deferred_under_one() -> None:
    """No night cap: no limit. A night cap and a ticket without a cost cap: the night cannot bound it."""
    assert NightBudget(cap_usd=None).decide(None) == "start"
    capped = NightBudget(cap_usd=10)
    assert capped.decide(None) == "defer"
    assert "no cost cap" in capped.defer_reason(None)


# -- approval and the batch ------------------------------------------------------------------


def test_the_batch_takes_high_priority_first_then_the_earliest_approved(tmp_path: Path) -> None:
    """Open, approved, ready-for-robot tickets only; high before medium before low; ties by approval time."""
    tracker = LocalTracker(tmp_path)
    tickets = [
        example("LOW-1", Priority.LOW),
        example("MED-2"),
        example("MED-1"),
        example("HIGH-1", Priority.HIGH),
        example("CLOSED-1", Priority.HIGH),
        example("UNLABELLED-1", Priority.HIGH, labels=["triage"]),
        example("UNAPPROVED-1", Priority.HIGH),
    ]
    for index, ticket in enumerate(tickets):
        tracker.create(ticket)
        if ticket.id != "UNAPPROVED-1":
            tracker.approve(ticket.id, "ana", T0 + timedelta(minutes=index if ticket.id != "MED-1" else -1))
    tracker.set_status("CLOSED-1", TrackerStatus.CLOSED)
    batch = select_batch(tracker.list())
    assert [t.id for t in batch] == ["HIGH-1", "MED-1", "MED-2", "LOW-1"]


def test_approval_is_refused_with_the_reason_for_each_kind_of_bad_ticket(tmp_path: Path) -> None:
    """Unknown id, closed ticket, missing label, unknown repo, missing playbook: each refused, saying why."""
    playbooks = tmp_path / "playbooks"
    settings = load_settings(write_config(tmp_path, playbooks=playbooks))
    tracker = LocalTracker(settings.tickets_root)
    good = example("GOOD-1")
    copy_playbook("example", good.id, playbooks)
    closed, unlabelled = example("CLOSED-1"), example("TRIAGE-1", labels=["triage"])
    elsewhere = example("REPO-1").model_copy(
        update={"context": example("REPO-1").context.model_copy(update={"repo": "nowhere"})}
    )
    no_playbook = example("NOPB-1")
    for ticket in (good, closed, unlabelled, elsewhere, no_playbook):
        tracker.create(ticket)
    tracker.set_status(closed.id, TrackerStatus.CLOSED)

    def problem(ticket_id: str) -> str | None:
        return approval_problem(tracker.get(ticket_id), ticket_id, settings)

    assert problem("GOOD-1") is None
    assert problem("NOPE-9") == "NOPE-9: no such ticket in the tracker"
    assert "closed" in (problem("CLOSED-1") or "")
    assert "not labelled ready-for-robot" in (problem("TRIAGE-1") or "")
    assert "unknown repo 'nowhere'" in (problem("REPO-1") or "")
    assert "no playbook" in (problem("NOPB-1") or "")


def run_cli(monkeypatch: pytest.MonkeyPatch, config: Path, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["factory", "--config", str(config), *args])
    return starter._run_cli()


def test_approve_validates_every_id_first_and_changes_nothing_if_one_is_bad(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`factory approve GOOD BAD` exits 2 with one line naming BAD's problem, and GOOD stays unapproved;
    `factory approve GOOD --by ana` records who approved and when; `factory unapprove` withdraws it."""
    playbooks = tmp_path / "playbooks"
    config = write_config(tmp_path, playbooks=playbooks)
    settings = load_settings(config)
    tracker = LocalTracker(settings.tickets_root)
    tracker.create(example("GOOD-1"))
    copy_playbook("example", "GOOD-1", playbooks)

    assert run_cli(monkeypatch, config, "approve", "GOOD-1", "BAD-1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: approval refused: BAD-1: no such ticket in the tracker"]
    assert tracker.get("GOOD-1").approval is None  # type: ignore[union-attr]

    before = datetime.now(UTC)
    assert run_cli(monkeypatch, config, "approve", "GOOD-1", "--by", "ana") == 0
    approval = tracker.get("GOOD-1").approval  # type: ignore[union-attr]
    assert approval is not None and approval.by == "ana" and approval.at >= before
    assert run_cli(monkeypatch, config, "queue") == 0
    assert "GOOD-1" in capsys.readouterr().out
    assert run_cli(monkeypatch, config, "unapprove", "GOOD-1") == 0
    assert tracker.get("GOOD-1").approval is None  # type: ignore[union-attr]


def test_close_refuses_an_unknown_id_and_changes_nothing_then_closes_and_drops_the_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`factory close GOOD BAD` exits 2 naming BAD and leaves GOOD open; `factory close GOOD --reason R`
    closes it, withdraws its approval (out of tonight's queue) and records R; closing again says so."""
    playbooks = tmp_path / "playbooks"
    config = write_config(tmp_path, playbooks=playbooks)
    tracker = LocalTracker(load_settings(config).tickets_root)
    tracker.create(example("GOOD-1"))
    tracker.approve("GOOD-1", "ana", T0)

    assert run_cli(monkeypatch, config, "close", "GOOD-1", "BAD-1") == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: no such ticket in the tracker: BAD-1"]
    assert tracker.get("GOOD-1").status == TrackerStatus.OPEN  # type: ignore[union-attr]

    assert run_cli(monkeypatch, config, "close", "GOOD-1", "--reason", "merged as #7", "--by", "bob") == 0
    assert capsys.readouterr().out.strip() == "closed GOOD-1"
    tracked = tracker.get("GOOD-1")
    assert tracked is not None and (tracked.status, tracked.approval) == (TrackerStatus.CLOSED, None)
    assert [(c.author, c.text) for c in tracked.comments] == [("bob", "Closed: merged as #7")]
    assert run_cli(monkeypatch, config, "close", "GOOD-1") == 0
    assert capsys.readouterr().out.strip() == "GOOD-1 was already closed"


def test_approve_all_ready_takes_the_valid_ones_up_to_the_limit_and_skips_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all-ready --limit 2 approves the first two valid ready tickets and says which it skipped and why."""
    playbooks = tmp_path / "playbooks"
    config = write_config(tmp_path, playbooks=playbooks)
    tracker = LocalTracker(load_settings(config).tickets_root)
    for ticket_id in ("A-1", "B-1", "C-1", "D-1"):
        tracker.create(example(ticket_id))
        if ticket_id != "B-1":
            copy_playbook("example", ticket_id, playbooks)
    assert run_cli(monkeypatch, config, "approve", "--all-ready", "--limit", "2") == 0
    captured = capsys.readouterr()
    assert [t.id for t in tracker.list(approved=True)] == ["A-1", "C-1"]
    assert "skipped B-1:" in captured.err and "no playbook" in captured.err


# -- the report and the tracker ----------------------------------------------------------------


def outcome(ticket_id: str, state: NightTicketState, **update: object) -> NightTicketOutcome:
    base = NightTicketOutcome(ticket_id=ticket_id, title=f"title of {ticket_id}", state=state)
    return base.model_copy(update=update)


def sample_report() -> NightReport:
    pr = PullRequestRef(number=7, url="file:///forge/calculator/pulls/7", head="bug/a-1-fix")
    return NightReport(
        night="2025-03-01",
        time_zone="Europe/Berlin",
        started_at=datetime(2025, 3, 1, 18, 0, tzinfo=UTC),
        written_at=datetime(2025, 3, 1, 19, 30, tzinfo=UTC),
        state="completed",
        max_concurrent=5,
        cost_cap_usd=20,
        spent_usd=1.25,
        peak_running=2,
        outcomes=[
            outcome(
                "A-1",
                NightTicketState.READY_FOR_MERGE,
                pull_request=pr,
                started_at=datetime(2025, 3, 1, 18, 0, tzinfo=UTC),
                ended_at=datetime(2025, 3, 1, 18, 12, 30, tzinfo=UTC),
                cost_usd=1.25,
                review_rounds=2,
                reason="pull request #7 approved by review; ready for merge",
            ),
            outcome("B-1", NightTicketState.FAILED, reason="tests still fail after 3 test round(s)"),
            outcome("C-1", NightTicketState.DEFERRED, reason="deferred: its cost cap $5.00 does not fit"),
        ],
    )


def test_the_report_shows_each_ticket_the_totals_and_what_needs_a_human() -> None:
    """Per ticket: state, PR link, duration, cost, review rounds, reason; totals; merge/failure/deferred lists."""
    text = render_report(sample_report())
    assert text.startswith("# Nightly Report 2025-03-01\n")
    assert "started 2025-03-01 19:00 CET" in text  # in the configured zone
    row = next(line for line in text.splitlines() if line.startswith("| A-1"))
    assert "| ready_for_merge | [#7](file:///forge/calculator/pulls/7) | 12m30s | $1.25 | 2 |" in row
    assert "- tickets: 3 (ready_for_merge 1, failed 1, deferred 1)" in text
    assert "- cost: $1.25 of the night's cap $20.00" in text
    needs = text.split("## Needs a human")[1]
    assert "review and merge [#7]" in needs
    assert "B-1 failed: tests still fail after 3 test round(s)" in needs
    assert "deferred to the next night (still approved): C-1" in needs
    interim = render_report(sample_report().model_copy(update={"state": "running"}))
    assert interim.startswith("# Nightly Report 2025-03-01 (interim, 20:30 CET)")


def test_the_report_is_stored_by_night_and_read_back_newest_first(tmp_path: Path) -> None:
    """`factory report` shows the newest report; `factory report DATE` that night's; a missing one is an error."""
    write_report(tmp_path, sample_report())
    write_report(tmp_path, sample_report().model_copy(update={"night": "2025-03-02"}))
    path, text = read_report(tmp_path)
    assert path.name == "2025-03-02.md" and "# Nightly Report 2025-03-02" in text
    assert "# Nightly Report 2025-03-01" in read_report(tmp_path, "2025-03-01")[1]
    with pytest.raises(FactoryError, match="no Nightly Report for 2025-01-01"):
        read_report(tmp_path, "2025-01-01")
    with pytest.raises(FactoryError, match="not a date"):
        read_report(tmp_path, "yesterday")
    note = report_note(sample_report())
    assert note.fields["ready for merge"] == "1" and note.fields["need a human"] == "1"
    assert "B-1" in note.text


def test_outcomes_update_the_tracker_once_each(tmp_path: Path) -> None:
    """Ready: approval removed, pr-open replaces ready-for-robot, a comment with the PR. Failed: approval
    removed, the reason in a comment. Deferred: still approved. Recording twice adds nothing."""
    tracker = LocalTracker(tmp_path)
    for ticket_id in ("A-1", "B-1", "C-1"):
        tracker.create(example(ticket_id))
        tracker.approve(ticket_id, "ana", T0)
    for item in sample_report().outcomes:
        apply_outcome(tracker, "2025-03-01", item)
        apply_outcome(tracker, "2025-03-01", item)
    ready, failed, deferred = (tracker.get(i) for i in ("A-1", "B-1", "C-1"))
    assert ready is not None and failed is not None and deferred is not None
    assert ready.approval is None and PR_OPEN_LABEL in ready.ticket.labels and READY_LABEL not in ready.ticket.labels
    assert [c.text for c in ready.comments] == [
        "Night shift 2025-03-01: ready_for_merge · pull request #7 file:///forge/calculator/pulls/7"
        " — pull request #7 approved by review; ready for merge"
    ]
    assert failed.approval is None and "tests still fail" in failed.comments[0].text
    assert deferred.approval is not None and len(deferred.comments) == 1


# -- schedules as data ------------------------------------------------------------------------


def test_the_declared_schedules_follow_the_configuration(tmp_path: Path) -> None:
    """Night shift daily at [night_shift] start, janitor on its day, discovery before approval, all in the
    configured zone, each naming its workflow type and queue, and each skipping a run while one is going."""
    settings = load_settings(
        write_config(tmp_path, '[night_shift]\ntime_zone = "Europe/Berlin"\nstart = "20:15"\njanitor_day = "sat"\n')
    )
    schedules = {s.name: s for s in declared_schedules(settings)}
    assert set(schedules) == {"night-shift", "janitor", "discovery"}
    night = schedules["night-shift"]
    assert (night.cron, night.time_zone, night.workflow, night.task_queue) == (
        "15 20 * * *",
        "Europe/Berlin",
        "NightShiftWorkflow",
        "execution",
    )
    assert schedules["janitor"].cron == "0 2 * * sat" and schedules["janitor"].workflow == "JanitorWorkflow"
    assert schedules["discovery"].cron == "0 17 * * *" and schedules["discovery"].task_queue == "discovery"
    assert all(s.overlap == "skip" for s in schedules.values())
    with pytest.raises(FactoryError, match="no schedule named 'nightly'"):
        declared_schedule(settings, "nightly")
