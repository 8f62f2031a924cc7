"""Activities of the night shift: thin adapters from Temporal to the tracker and ``factory.night_shift``.

Taking the approved batch, resolving each ticket just before it starts, telling the
tracker how each ended, writing the Nightly Report and posting it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from activities.ticket import boundary, in_thread
from factory import night_shift
from factory.config import Settings
from factory.errors import FactoryError
from factory.models import (
    READY_LABEL,
    EarlierRun,
    NightBatchRequest,
    NightOutcomeRecord,
    NightPlan,
    NightReport,
    NightReportNote,
    NightTicket,
    PreparedTicket,
    TicketResult,
    TrackerStatus,
    workflow_id_for,
)
from factory.notify import send_notification
from factory.runs import resolve_ticket_run
from factory.trackers import Tracker, tracker_for

__all__ = ["NightShiftActivities"]

log = structlog.get_logger()


class NightShiftActivities:
    def __init__(self, settings: Settings, tracker: Tracker | None = None) -> None:
        self.settings = settings
        self.tracker = tracker or tracker_for(settings)

    @activity.defn
    @boundary
    async def take_batch(self, request: NightBatchRequest) -> NightPlan:
        """The approved batch, snapshot now, and the night's settings."""
        config = self.settings.night_shift

        def take() -> NightPlan:
            approved = self.tracker.list(label=READY_LABEL, status=TrackerStatus.OPEN, approved=True)
            batch = night_shift.select_batch(approved)
            return NightPlan(
                night=request.request.night or night_shift.night_of(request.started_at, config.time_zone),
                time_zone=config.time_zone,
                started_at=request.started_at,
                report_due=night_shift.next_occurrence(request.started_at, config.report_at, config.time_zone),
                max_concurrent=request.request.max_concurrent or config.max_concurrent,
                cost_cap_usd=config.cost_cap_usd,
                tickets=[night_shift.to_night_ticket(t) for t in batch],
            )

        plan = await in_thread(take)
        log.info("night_batch_taken", night=plan.night, tickets=[t.ticket_id for t in plan.tickets])
        return plan

    @activity.defn
    @boundary
    async def prepare_ticket(self, ticket: NightTicket) -> PreparedTicket:
        """Resolve the ticket's run as it stands now; refuse it if it was closed or its approval withdrawn."""

        def prepare() -> PreparedTicket:
            tracked = self.tracker.get(ticket.ticket_id)
            if tracked is None:
                return PreparedTicket(ticket_id=ticket.ticket_id, refused="the ticket is gone from the tracker")
            if tracked.status != TrackerStatus.OPEN:
                return PreparedTicket(ticket_id=ticket.ticket_id, refused=f"the ticket is {tracked.status.value}")
            if tracked.approval is None:
                return PreparedTicket(ticket_id=ticket.ticket_id, refused="the approval was withdrawn")
            try:
                run = resolve_ticket_run(tracked.ticket, self.settings)
            except FactoryError as exc:
                return PreparedTicket(ticket_id=ticket.ticket_id, refused=str(exc))
            # A reopened ticket's run is a new attempt: it may run again, on a branch of its own.
            return PreparedTicket(ticket_id=ticket.ticket_id, run=run.model_copy(update={"attempt": tracked.reopened}))

        return await in_thread(prepare)

    @activity.defn
    @boundary
    async def earlier_run(self, ticket_id: str) -> EarlierRun:
        """The ticket's existing workflow: still running, or how it ended."""
        handle = activity.client().get_workflow_handle(workflow_id_for(ticket_id), result_type=TicketResult)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return EarlierRun(running=False, status="unknown")
            raise
        status = description.status.name.lower() if description.status else "unknown"
        if description.status == WorkflowExecutionStatus.RUNNING:
            return EarlierRun(running=True, status=status)
        result: TicketResult | None = None
        if description.status == WorkflowExecutionStatus.COMPLETED:
            try:
                result = await handle.result(follow_runs=False)
            except WorkflowFailureError:
                result = None
        return EarlierRun(running=False, status=status, result=result)

    @activity.defn
    @boundary
    async def mark_taken(self, record: NightOutcomeRecord) -> None:
        """A comment on the ticket: the night shift took it (once, even if retried)."""
        text = f"Night shift {record.night}: taken ({record.outcome.workflow_id})"

        def mark() -> None:
            tracked = self.tracker.get(record.outcome.ticket_id)
            if tracked is not None and not any(c.text == text for c in tracked.comments):
                self.tracker.comment(record.outcome.ticket_id, night_shift.ROBOT, text)

        await in_thread(mark)

    @activity.defn
    @boundary
    async def record_outcome(self, record: NightOutcomeRecord) -> None:
        await in_thread(night_shift.apply_outcome, self.tracker, record.night, record.outcome)

    @activity.defn
    @boundary
    async def write_report(self, report: NightReport) -> str:
        path = await in_thread(night_shift.write_report, self.settings.reports_root, report)
        log.info("night_report_written", night=report.night, state=report.state, path=str(path))
        return str(path)

    @activity.defn
    @boundary
    async def post_report(self, note: NightReportNote) -> list[str]:
        """Post the report to one chat channel (nothing configured is not an error)."""
        message = night_shift.report_note(
            note.report, night_shift.report_path(self.settings.reports_root, note.report.night)
        )
        return await in_thread(
            send_notification, message.model_copy(update={"channel": note.channel}), self.settings.notifications
        )

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.take_batch,
            self.prepare_ticket,
            self.earlier_run,
            self.mark_taken,
            self.record_outcome,
            self.write_report,
            self.post_report,
        ]
