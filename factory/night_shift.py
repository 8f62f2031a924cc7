"""The night shift's domain logic: approval, the batch, time-of-day in a zone, the Nightly Report.

Plain Python, no Temporal. ``NightShiftWorkflow`` orchestrates; the activities call
these functions; the command line uses them for ``approve``, ``queue`` and ``report``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from factory.config import Settings
from factory.errors import ConfigError, FactoryError
from factory.models import (
    READY_LABEL,
    NightReport,
    NightTicket,
    NightTicketOutcome,
    NightTicketState,
    Notification,
    Priority,
    TrackedTicket,
    TrackerStatus,
)
from factory.runs import resolve_ticket_run
from factory.trackers import Tracker

__all__ = [
    "NEEDS_HUMAN_STATES",
    "PR_OPEN_LABEL",
    "ROBOT",
    "apply_outcome",
    "approval_problem",
    "next_occurrence",
    "night_of",
    "order_ready",
    "parse_clock",
    "read_report",
    "render_report",
    "report_note",
    "report_path",
    "select_batch",
    "to_night_ticket",
    "write_report",
    "zone",
]

PR_OPEN_LABEL = "pr-open"
ROBOT = "night-shift"

NEEDS_HUMAN_STATES = frozenset(
    {
        NightTicketState.FAILED,
        NightTicketState.BUDGET_EXHAUSTED,
        NightTicketState.NEEDS_HUMAN,
        NightTicketState.NOT_STARTED,
    }
)
_PRIORITY_ORDER = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------
# Time of day in a zone


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin") from None


def parse_clock(text: str) -> time:
    """``HH:MM`` or ``HH:MM:SS`` as a time of day."""
    parts = text.strip().split(":")
    try:
        if not 2 <= len(parts) <= 3:
            raise ValueError(text)
        hour, minute, second = (int(p) for p in [*parts, "0"][:3])
        return time(hour, minute, second)
    except ValueError:
        raise ConfigError(f"{text!r} is not a time of day (HH:MM)") from None


def next_occurrence(after: datetime, clock: str, zone_name: str) -> datetime:
    """The first moment strictly after ``after`` when the wall clock in the zone shows ``clock`` (in UTC).

    A time skipped by a daylight-saving jump happens at the first valid moment after it.
    """
    tz = zone(zone_name)
    at = parse_clock(clock)
    local = after.astimezone(tz)
    for days in range(3):
        day = local.date() + timedelta(days=days)
        candidate = datetime.combine(day, at, tzinfo=tz)
        # Round-trip through UTC: a wall time that does not exist (spring forward) moves past the gap.
        candidate = candidate.astimezone(UTC).astimezone(tz)
        if candidate > local:
            return candidate.astimezone(UTC)
    raise AssertionError("unreachable: a time of day recurs within two days")


def night_of(moment: datetime, zone_name: str) -> str:
    """The night a start belongs to: its date in the zone."""
    return moment.astimezone(zone(zone_name)).date().isoformat()


# --------------------------------------------------------------------------
# Approval and the batch


def approval_problem(tracked: TrackedTicket | None, ticket_id: str, settings: Settings) -> str | None:
    """Why this ticket cannot be approved for the night shift, or None when it can."""
    if tracked is None:
        return f"{ticket_id}: no such ticket in the tracker"
    if tracked.status != TrackerStatus.OPEN:
        return f"{ticket_id}: ticket is {tracked.status.value}; only open tickets can be approved"
    if READY_LABEL not in tracked.ticket.labels:
        return f"{ticket_id}: ticket is not labelled {READY_LABEL}"
    try:
        run = resolve_ticket_run(tracked.ticket, settings)
    except FactoryError as exc:
        return f"{ticket_id}: {exc}"
    night_cap = settings.night_shift.cost_cap_usd
    if night_cap is not None and run.caps.cost_usd is None:
        return f"{ticket_id}: the ticket has no cost cap, and the night's cap (${night_cap:.2f}) needs one"
    if night_cap is not None and run.caps.cost_usd is not None and run.caps.cost_usd > night_cap:
        return f"{ticket_id}: its cost cap ${run.caps.cost_usd:.2f} exceeds the night's cap ${night_cap:.2f}"
    return None


def select_batch(approved: Iterable[TrackedTicket]) -> list[TrackedTicket]:
    """The night's order: open approved ready tickets, high priority first, then the earliest approved."""
    chosen = [
        t
        for t in approved
        if t.approval is not None and t.status == TrackerStatus.OPEN and READY_LABEL in t.ticket.labels
    ]
    return sorted(
        chosen,
        key=lambda t: (_PRIORITY_ORDER[t.ticket.priority], t.approval.at if t.approval else _EPOCH, t.id),
    )


def order_ready(tickets: Iterable[TrackedTicket]) -> list[TrackedTicket]:
    """Ready tickets waiting for approval, in the order `approve --all-ready` takes them: priority, then age."""
    return sorted(tickets, key=lambda t: (_PRIORITY_ORDER[t.ticket.priority], t.created_at, t.id))


def to_night_ticket(tracked: TrackedTicket) -> NightTicket:
    return NightTicket(
        ticket_id=tracked.id,
        title=tracked.ticket.display_title,
        priority=tracked.ticket.priority,
        approved_by=tracked.approval.by if tracked.approval else None,
        approved_at=tracked.approval.at if tracked.approval else None,
    )


def apply_outcome(tracker: Tracker, night: str, outcome: NightTicketOutcome) -> None:
    """Tell the tracker how the night went for the ticket.

    Ready for merge: approval removed, ``pr-open`` instead of ``ready-for-robot``, a comment with the PR.
    Failed, out of budget, needs a human, could not start: approval removed, a comment with the reason.
    Deferred, cancelled, already running: approval kept, so the ticket comes back the next night.
    """
    state = outcome.state
    if state in (NightTicketState.QUEUED, NightTicketState.RUNNING):
        return
    if tracker.get(outcome.ticket_id) is None:
        return
    link = f" · pull request #{outcome.pull_request.number} {outcome.pull_request.url}" if outcome.pull_request else ""
    text = f"Night shift {night}: {state.value}{link}" + (f" — {outcome.reason}" if outcome.reason else "")
    tracked = tracker.get(outcome.ticket_id)
    if tracked is not None and any(c.text == text for c in tracked.comments):
        return  # a retried activity: already recorded
    if state == NightTicketState.READY_FOR_MERGE:
        tracker.unapprove(outcome.ticket_id)
        tracker.label(outcome.ticket_id, add=[PR_OPEN_LABEL], remove=[READY_LABEL])
    elif state in NEEDS_HUMAN_STATES or state == NightTicketState.ALREADY_RAN:
        tracker.unapprove(outcome.ticket_id)
    tracker.comment(outcome.ticket_id, ROBOT, text)


# --------------------------------------------------------------------------
# The Nightly Report


def _money(value: float | None) -> str:
    return "no cap" if value is None else f"${value:.4f}" if value < 1 else f"${value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _pr(outcome: NightTicketOutcome) -> str:
    pr = outcome.pull_request
    return f"[#{pr.number}]({pr.url})" if pr else "—"


def render_report(report: NightReport) -> str:
    """The Nightly Report as Markdown: per ticket, totals, and what needs a human."""
    tz = zone(report.time_zone)
    local = report.written_at.astimezone(tz)
    if report.state == "running":
        heading = f"# Nightly Report {report.night} (interim, {local:%H:%M %Z})"
    else:
        heading = f"# Nightly Report {report.night}"
    counts: dict[NightTicketState, int] = {}
    for o in report.outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    ran = [o for o in report.outcomes if o.started_at is not None]
    wall = (report.written_at - report.started_at).total_seconds()
    lines = [
        heading,
        "",
        f"Night shift started {report.started_at.astimezone(tz):%Y-%m-%d %H:%M %Z}; state: **{report.state}**; "
        f"wall time {_duration(wall)}.",
        f"At most {report.max_concurrent} tickets at once (peak {report.peak_running}); "
        f"night cost cap {_money(report.cost_cap_usd)}.",
        "",
        "## Tickets",
        "",
        "| ticket | state | pull request | duration | cost | review rounds | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in report.outcomes:
        lines.append(
            f"| {_cell(o.ticket_id)}: {_cell(o.title)[:60]} | {o.state.value} | {_pr(o)} | {_duration(o.duration_s)} "
            f"| {_money(o.cost_usd)} | {o.review_rounds} | {_cell(o.reason)[:300]} |"
        )
    if not report.outcomes:
        lines.append("| (no approved tickets) | | | | | | |")
    lines += [
        "",
        "## Totals",
        "",
        f"- tickets: {len(report.outcomes)} ("
        + (", ".join(f"{state.value} {n}" for state, n in counts.items()) or "none")
        + ")",
        f"- started tonight: {len(ran)}",
        f"- cost: {_money(report.spent_usd)}"
        + (f" of the night's cap {_money(report.cost_cap_usd)}" if report.cost_cap_usd is not None else ""),
        f"- ticket time: {_duration(sum(o.duration_s or 0 for o in report.outcomes))}",
        "",
        "## Needs a human",
        "",
    ]
    merge = [o for o in report.outcomes if o.state == NightTicketState.READY_FOR_MERGE]
    stuck = [o for o in report.outcomes if o.state in NEEDS_HUMAN_STATES]
    for o in merge:
        lines.append(f"- review and merge {_pr(o)} ({o.ticket_id}: {_cell(o.title)[:80]})")
    for o in stuck:
        lines.append(f"- {o.ticket_id} {o.state.value}: {_cell(o.reason)[:300] or 'no reason given'}")
    deferred = [o for o in report.outcomes if o.state == NightTicketState.DEFERRED]
    if deferred:
        lines.append(f"- deferred to the next night (still approved): {', '.join(o.ticket_id for o in deferred)}")
    cancelled = [o for o in report.outcomes if o.state == NightTicketState.CANCELLED]
    if cancelled:
        lines.append(
            f"- cancelled (still approved, they run again next night): {', '.join(o.ticket_id for o in cancelled)}"
        )
    if not (merge or stuck or deferred or cancelled):
        lines.append("- nothing")
    return "\n".join(lines) + "\n"


def report_path(reports_root: Path, night: str) -> Path:
    return reports_root / f"{night}.md"


def write_report(reports_root: Path, report: NightReport) -> Path:
    """Write (or replace, for the final one) the night's report; returns its path."""
    reports_root.mkdir(parents=True, exist_ok=True)
    path = report_path(reports_root, report.night)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_report(report), encoding="utf-8")
    tmp.replace(path)
    return path


def read_report(reports_root: Path, night: str | None = None) -> tuple[Path, str]:
    """The report of that night (YYYY-MM-DD), or the newest one."""
    if night is not None:
        try:
            date.fromisoformat(night)
        except ValueError:
            raise FactoryError(f"{night!r} is not a date (YYYY-MM-DD)") from None
        path = report_path(reports_root, night)
        if not path.exists():
            raise FactoryError(f"no Nightly Report for {night} in {reports_root}")
        return path, path.read_text(encoding="utf-8")
    reports = sorted(reports_root.glob("????-??-??.md")) if reports_root.is_dir() else []
    if not reports:
        raise FactoryError(f"no Nightly Report yet in {reports_root}: the night shift writes one when it ends")
    return reports[-1], reports[-1].read_text(encoding="utf-8")


def report_note(report: NightReport, path: Path | None = None) -> Notification:
    """The report as a chat message: totals as fields, what needs a human as text."""
    merge = [o for o in report.outcomes if o.state == NightTicketState.READY_FOR_MERGE]
    stuck = [o for o in report.outcomes if o.state in NEEDS_HUMAN_STATES]
    deferred = [o for o in report.outcomes if o.state == NightTicketState.DEFERRED]
    lines = [f"Ready for merge: {o.ticket_id} {o.pull_request.url if o.pull_request else ''}".strip() for o in merge]
    lines += [f"{o.state.value}: {o.ticket_id} — {o.reason[:200]}" for o in stuck]
    kind = "interim " if report.state == "running" else ""
    return Notification(
        title=f"Nightly Report {report.night} ({kind}{report.state})",
        text="\n".join(lines[:20]) or "Nothing needs a human.",
        fields={
            "report": str(path) if path else "",
            "tickets": str(len(report.outcomes)),
            "ready for merge": str(len(merge)),
            "need a human": str(len(stuck)),
            "deferred": str(len(deferred)),
            "cost": _money(report.spent_usd),
        },
    )
