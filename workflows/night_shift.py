"""NightShiftWorkflow: the approved batch runs overnight, at most N tickets at a time, then the Nightly Report.

Orchestration only. The batch is taken once at the start (a snapshot: tickets
approved later wait for the next night). Each ticket is a child ``TicketWorkflow``
whose id is ``ticket-<ID>``, so a ticket already running is never started twice and
one already done is not run again, unless the tracker reopened it since (a recurring
problem): then it runs again under the same id, on a branch of its own. A sliding
window keeps up to ``max_concurrent`` children running and starts the next as soon as
any one ends. One ticket failing never stops the others. The per-night cost cap is
honoured before each start.

A ready ticket keeps its workflow open to listen for comments on its pull request;
it signals ``ticket_ready`` to its parent, so the night counts it as done at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from activities.night_shift import NightShiftActivities
    from factory.models import (
        EarlierRun,
        NightBatchRequest,
        NightBudget,
        NightCarry,
        NightOutcomeRecord,
        NightPlan,
        NightReport,
        NightReportNote,
        NightShiftRequest,
        NightTicket,
        NightTicketOutcome,
        NightTicketState,
        PreparedTicket,
        TicketResult,
        TicketRun,
        TicketState,
        workflow_id_for,
    )
    from workflows.retry import ACTIVITY_RETRY, failure_reason
    from workflows.search_attributes import REPO, TICKET_ID, TICKET_PRIORITY, TICKET_STATE, TICKET_TYPE
    from workflows.ticket import TicketWorkflow

__all__ = ["NightShiftWorkflow"]

EXECUTION_QUEUE = "execution"
_ACTIVITY_TIMEOUT = timedelta(minutes=2)
_RUNNING_ELSEWHERE = "already running (started outside this night); not started twice"
# patched(): nights that ran before a reopened ticket could run again replay as they ran.
_RERUN_REOPENED = "rerun-reopened-tickets"


def _cancelled(err: BaseException) -> bool:
    return isinstance(err, asyncio.CancelledError | CancelledError) or (
        isinstance(err, ActivityError | ChildWorkflowError) and isinstance(err.cause, CancelledError)
    )


@workflow.defn
class NightShiftWorkflow:
    def __init__(self) -> None:
        self._plan: NightPlan | None = None
        self._outcomes: dict[str, NightTicketOutcome] = {}
        self._budget = NightBudget()
        self._running: dict[str, workflow.ChildWorkflowHandle[Any, TicketResult]] = {}
        self._prepared: dict[str, asyncio.Task[PreparedTicket]] = {}
        # Tracker notes run beside the window, so a free place is filled without waiting for them.
        self._background: list[asyncio.Task[None]] = []
        self._ready: dict[str, TicketResult] = {}
        self._next = 0
        self._peak = 0
        self._interim_written = False
        self._runs = 1

    @workflow.signal
    def ticket_ready(self, result: TicketResult) -> None:
        """A child reached ready_for_merge and stays open for PR comments: it no longer holds a place."""
        self._ready[result.ticket_id] = result

    @workflow.query
    def status(self) -> NightReport | None:
        return self._report("running") if self._plan is not None else None

    @workflow.run
    async def run(self, request: NightShiftRequest) -> NightReport:
        if request.carry is not None:
            self._restore(request.carry)
        else:
            self._plan = await workflow.execute_activity_method(
                NightShiftActivities.take_batch,
                NightBatchRequest(request=request, started_at=workflow.now()),
                task_queue=EXECUTION_QUEUE,
                start_to_close_timeout=_ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
                summary="take the approved batch",
            )
            self._outcomes = {
                t.ticket_id: NightTicketOutcome(
                    ticket_id=t.ticket_id, title=t.title, workflow_id=workflow_id_for(t.ticket_id)
                )
                for t in self._plan.tickets
            }
            self._budget = NightBudget(cap_usd=self._plan.cost_cap_usd)
        plan = self._state()
        workflow.logger.info("night %s: %d approved ticket(s)", plan.night, len(plan.tickets))
        try:
            await self._work(request)
        except BaseException as err:
            if not _cancelled(err):
                raise
            # Cancelled: cancel the running tickets and wait for their clean-up (sandboxes destroyed),
            # then report. Activities still run after a cancellation has been delivered.
            await self._cancel_running()
            await self._publish("cancelled")
            raise asyncio.CancelledError("night shift cancelled") from None
        return await self._publish("completed")

    # -- the window ---------------------------------------------------------------------

    async def _work(self, request: NightShiftRequest) -> None:
        plan = self._state()
        started_this_run = 0
        while True:
            while self._next < len(plan.tickets) and len(self._running) < plan.max_concurrent:
                if started_this_run >= request.tickets_per_run or workflow.info().is_continue_as_new_suggested():
                    break
                step = await self._try_start(plan.tickets[self._next], request)
                if step == "wait":
                    break
                self._next += 1
                if step == "started":
                    started_this_run += 1
            self._show()
            if self._running:
                await self._wait_for_one()
                continue
            if self._next >= len(plan.tickets):
                return
            await self._settle()
            # Nothing running and tickets left: this run has started its share. A fresh history
            # keeps a large batch far from the history limits; the window drained first, so no
            # child is left behind.
            workflow.continue_as_new(
                NightShiftRequest(
                    night=plan.night,
                    max_concurrent=request.max_concurrent,
                    tickets_per_run=request.tickets_per_run,
                    ticket_search_attributes=request.ticket_search_attributes,
                    carry=self._carry(),
                )
            )

    async def _try_start(self, ticket: NightTicket, request: NightShiftRequest) -> Literal["started", "done", "wait"]:
        ticket_id = ticket.ticket_id
        prepared = await self._prepare(ticket)
        if prepared.refused is not None or prepared.run is None:
            await self._end(ticket_id, NightTicketState.NOT_STARTED, f"not started: {prepared.refused}")
            return "done"
        run = prepared.run
        cap = run.caps.cost_usd
        decision = self._budget.decide(cap)
        if decision == "wait":
            return "wait"
        if decision == "defer":
            await self._end(ticket_id, NightTicketState.DEFERRED, self._budget.defer_reason(cap))
            return "done"
        try:
            # A ticket that completed (ready, failed, out of budget) is not run again; one that was
            # cancelled or terminated (a cancelled night) may run on a later night.
            handle = await self._start_child(run, request, WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
        except WorkflowAlreadyStartedError:
            if not await self._already_started(ticket_id, run.attempt):
                return "done"
            try:
                # Reopened since its run completed: a new run under the same id (what `factory show` follows).
                handle = await self._start_child(run, request, WorkflowIDReusePolicy.ALLOW_DUPLICATE)
            except WorkflowAlreadyStartedError:
                await self._end(ticket_id, NightTicketState.ALREADY_RUNNING, _RUNNING_ELSEWHERE)
                return "done"
        self._prepared.pop(ticket_id, None)
        self._prefetch()
        self._running[ticket_id] = handle
        self._budget.started(ticket_id, cap)
        self._peak = max(self._peak, len(self._running))
        outcome = self._outcomes[ticket_id].model_copy(
            update={"state": NightTicketState.RUNNING, "started_at": workflow.now(), "cost_cap_usd": cap}
        )
        self._outcomes[ticket_id] = outcome
        self._beside(
            NightShiftActivities.mark_taken,
            NightOutcomeRecord(night=self._state().night, outcome=outcome),
            f"mark {ticket_id} taken",
        )
        return "started"

    async def _start_child(
        self, run: TicketRun, request: NightShiftRequest, reuse: WorkflowIDReusePolicy
    ) -> workflow.ChildWorkflowHandle[TicketWorkflow, TicketResult]:
        ticket_id = run.ticket.id
        return await workflow.start_child_workflow(
            TicketWorkflow.run,
            run,
            id=workflow_id_for(ticket_id),
            task_queue=EXECUTION_QUEUE,
            id_reuse_policy=reuse,
            # A ready ticket outlives the night, listening for PR comments.
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=_search_attributes(run) if request.ticket_search_attributes else None,
            static_summary=f"{ticket_id}: {run.ticket.display_title}"[:200],
            static_details=f"night shift {self._state().night}",
        )

    async def _prepare(self, ticket: NightTicket) -> PreparedTicket:
        task = self._prepared.get(ticket.ticket_id)
        if task is None:
            task = asyncio.create_task(self._prepare_now(ticket))
            self._prepared[ticket.ticket_id] = task
        return await task

    async def _prepare_now(self, ticket: NightTicket) -> PreparedTicket:
        try:
            prepared: PreparedTicket = await self._activity(
                NightShiftActivities.prepare_ticket, ticket, f"prepare {ticket.ticket_id}"
            )
        except ActivityError as err:
            if _cancelled(err):
                raise
            return PreparedTicket(ticket_id=ticket.ticket_id, refused=failure_reason(err))
        return prepared

    def _prefetch(self) -> None:
        """Resolve the next ticket while the window runs, so it starts the moment a place frees."""
        plan = self._state()
        following = self._next + 1
        if following < len(plan.tickets) and plan.tickets[following].ticket_id not in self._prepared:
            ticket = plan.tickets[following]
            self._prepared[ticket.ticket_id] = asyncio.create_task(self._prepare_now(ticket))

    async def _already_started(self, ticket_id: str, attempt: int) -> bool:
        """Ends the ticket's outcome as already running or already ran; or, for a ticket reopened
        since its earlier run completed, says it is to run again (True)."""
        earlier: EarlierRun = await self._activity(
            NightShiftActivities.earlier_run, ticket_id, f"look up the earlier run of {ticket_id}"
        )
        if earlier.running:
            await self._end(ticket_id, NightTicketState.ALREADY_RUNNING, _RUNNING_ELSEWHERE)
            return False
        result = earlier.result
        if result is None:
            await self._end(ticket_id, NightTicketState.ALREADY_RAN, f"skipped: already ran ({earlier.status})")
            return False
        if result.attempt < attempt and workflow.patched(_RERUN_REOPENED):
            return True
        outcome = self._outcomes[ticket_id].model_copy(
            update={
                "branch": result.branch,
                "pull_request": result.pull_request,
                "review_rounds": result.review_rounds,
            }
        )
        self._outcomes[ticket_id] = outcome
        await self._end(
            ticket_id,
            NightTicketState.ALREADY_RAN,
            f"skipped: already ran earlier, ended {result.state.value}: {result.reason}",
        )
        return False

    async def _wait_for_one(self) -> None:
        """Until a running ticket ends (or signals it is ready); the interim report when it is due."""
        plan = self._state()
        timeout: timedelta | None = None
        if plan.report_due is not None and not self._interim_written:
            timeout = plan.report_due - workflow.now()
            if timeout <= timedelta(0):
                await self._interim()
                return
        try:
            await workflow.wait_condition(self._one_finished, timeout=timeout)
        except TimeoutError:
            await self._interim()
            return
        for ticket_id in list(self._running):
            if self._running[ticket_id].done() or ticket_id in self._ready:
                await self._finish(ticket_id)

    def _one_finished(self) -> bool:
        return any(handle.done() or ticket_id in self._ready for ticket_id, handle in self._running.items())

    async def _interim(self) -> None:
        self._interim_written = True
        await self._publish("running")

    async def _finish(self, ticket_id: str, cancelled_reason: str = "cancelled") -> None:
        handle = self._running.pop(ticket_id)
        outcome = self._outcomes[ticket_id]
        now = workflow.now()
        if not handle.done() and ticket_id in self._ready:
            outcome = outcome.ended(self._ready[ticket_id], now)
        else:
            try:
                outcome = outcome.ended(handle.result(), now)
            except (ChildWorkflowError, CancelledError, asyncio.CancelledError) as err:
                if _cancelled(err):
                    state, reason = NightTicketState.CANCELLED, cancelled_reason
                else:
                    state, reason = NightTicketState.FAILED, failure_reason(err)
                outcome = outcome.model_copy(update={"state": state, "reason": reason, "ended_at": now})
        self._budget.finished(ticket_id, outcome.cost_usd)
        self._outcomes[ticket_id] = outcome
        workflow.logger.info("night %s: %s %s", self._state().night, ticket_id, outcome.state.value)
        await self._record(outcome)

    async def _cancel_running(self) -> None:
        for handle in self._running.values():
            handle.cancel()
        for ticket_id in list(self._running):
            with contextlib.suppress(ChildWorkflowError, CancelledError, asyncio.CancelledError):
                await self._running[ticket_id]
            await self._finish(ticket_id, "cancelled with the night shift; still approved for the next night")
        for outcome in self._outcomes.values():
            if outcome.state == NightTicketState.QUEUED:
                self._outcomes[outcome.ticket_id] = outcome.model_copy(
                    update={"reason": "not started: the night shift was cancelled (still approved)"}
                )

    # -- outcomes and the report ----------------------------------------------------------

    async def _end(self, ticket_id: str, state: NightTicketState, reason: str) -> None:
        outcome = self._outcomes[ticket_id].model_copy(update={"state": state, "reason": reason})
        self._outcomes[ticket_id] = outcome
        await self._record(outcome)

    async def _record(self, outcome: NightTicketOutcome) -> None:
        self._beside(
            NightShiftActivities.record_outcome,
            NightOutcomeRecord(night=self._state().night, outcome=outcome),
            f"record {outcome.ticket_id}: {outcome.state.value}",
        )

    def _beside(self, activity: Any, arg: Any, summary: str) -> None:
        self._background.append(asyncio.create_task(self._best_effort(activity, arg, summary)))

    async def _settle(self) -> None:
        """Wait for the tracker notes still under way (before a report, or handing over to the next run)."""
        pending, self._background = self._background, []
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _publish(self, state: Literal["running", "completed", "cancelled"]) -> NightReport:
        await self._settle()
        report = self._report(state)
        kind = "interim" if state == "running" else "final"
        await self._best_effort(NightShiftActivities.write_report, report, f"write the {kind} Nightly Report")
        for channel in ("slack", "discord"):
            await self._best_effort(
                NightShiftActivities.post_report,
                NightReportNote(report=report, channel=channel),
                f"post the {kind} Nightly Report to {channel}",
            )
        return report

    def _report(self, state: Literal["running", "completed", "cancelled"]) -> NightReport:
        plan = self._state()
        return NightReport(
            night=plan.night,
            time_zone=plan.time_zone,
            started_at=plan.started_at,
            written_at=workflow.now(),
            state=state,
            max_concurrent=plan.max_concurrent,
            cost_cap_usd=plan.cost_cap_usd,
            spent_usd=self._budget.spent_usd,
            peak_running=self._peak,
            outcomes=[self._outcomes[t.ticket_id] for t in plan.tickets],
        )

    # -- helpers ------------------------------------------------------------------------

    def _state(self) -> NightPlan:
        assert self._plan is not None
        return self._plan

    def _show(self) -> None:
        plan = self._state()
        ended = sum(1 for o in self._outcomes.values() if o.state not in (NightTicketState.QUEUED,))
        workflow.set_current_details(
            f"**Night shift {plan.night}** · {len(self._running)} running · "
            f"{ended - len(self._running)} ended · {len(plan.tickets) - self._next} waiting · "
            f"spent ${self._budget.spent_usd:.2f}"
            + (f" of ${plan.cost_cap_usd:.2f}" if plan.cost_cap_usd is not None else "")
        )

    def _carry(self) -> NightCarry:
        return NightCarry(
            plan=self._state(),
            next_index=self._next,
            outcomes=list(self._outcomes.values()),
            spent_usd=self._budget.spent_usd,
            interim_written=self._interim_written,
            peak_running=self._peak,
            runs=self._runs + 1,
        )

    def _restore(self, carry: NightCarry) -> None:
        self._plan = carry.plan
        self._next = carry.next_index
        self._outcomes = {o.ticket_id: o for o in carry.outcomes}
        self._budget = NightBudget(cap_usd=carry.plan.cost_cap_usd, spent_usd=carry.spent_usd)
        self._interim_written = carry.interim_written
        self._peak = carry.peak_running
        self._runs = carry.runs

    async def _activity(self, activity: Any, arg: Any, summary: str) -> Any:
        return await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=EXECUTION_QUEUE,
            start_to_close_timeout=_ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            summary=summary[:200],
        )

    async def _best_effort(self, activity: Any, arg: Any, summary: str) -> None:
        """Tracker notes, the report file, chat posts: a failure is logged, never ends the night."""
        try:
            await self._activity(activity, arg, summary)
        except ActivityError as err:
            if _cancelled(err):
                raise
            workflow.logger.warning("%s failed: %s", summary, failure_reason(err))


def _search_attributes(run: TicketRun) -> TypedSearchAttributes:
    ticket = run.ticket
    return TypedSearchAttributes(
        [
            SearchAttributePair(TICKET_ID, ticket.id),
            SearchAttributePair(TICKET_TYPE, ticket.type.value),
            SearchAttributePair(TICKET_PRIORITY, ticket.priority.value),
            SearchAttributePair(REPO, ticket.context.repo),
            SearchAttributePair(TICKET_STATE, TicketState.QUEUED.value),
        ]
    )
