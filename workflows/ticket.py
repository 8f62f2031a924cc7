"""TicketWorkflow: one ticket becomes one pull request, durably.

Orchestration only. Every side effect is an activity; every model call and every
tool call is its own activity, so after a crash Temporal replays this code up to
the last finished step and no finished model call is made again.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.review import GovernanceActivities
    from activities.ticket import TicketActivities
    from factory.models import (
        CloneRequest,
        CommandRequest,
        CommandResult,
        ExportRequest,
        FeedbackRequest,
        HumanComment,
        ModelStepRequest,
        Notification,
        ProvisionRequest,
        PullRequestBodyUpdate,
        PullRequestRef,
        PullRequestRequest,
        PushRequest,
        ReviewRequest,
        ReviewResult,
        SandboxHandle,
        Spend,
        TicketResult,
        TicketRun,
        TicketState,
        TicketStatus,
        ToolCallRequest,
        TranscriptStart,
        Verdict,
        branch_name,
    )
    from workflows.retry import ACTIVITY_RETRY, failure_reason
    from workflows.review import GOVERNANCE_QUEUE, ReviewWorkflow
    from workflows.search_attributes import TICKET_STATE

__all__ = ["TicketWorkflow"]

_RETRY = ACTIVITY_RETRY
_LOG_LINES = 40


class _TicketEnded(Exception):
    """Internal: unwinds the run to its clean-up with a final state and reason."""

    def __init__(self, state: TicketState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


@workflow.defn
class TicketWorkflow:
    def __init__(self) -> None:
        self._status: TicketStatus | None = None
        self._sandbox: SandboxHandle | None = None
        self._last_workspace: str | None = None
        self._instances = 0
        self._comments: list[HumanComment] = []
        self._closed = False
        self._pr_body = ""
        self._diffstat = ""
        self._clock_started: datetime | None = None
        self._time_used = timedelta(0)

    @workflow.query
    def status(self) -> TicketStatus | None:
        return self._status

    # -- the ticket's life -----------------------------------------------------------

    @workflow.run
    async def run(self, run: TicketRun) -> TicketResult:
        ticket = run.ticket
        self._run = run
        self._status = TicketStatus(
            ticket_id=ticket.id,
            title=ticket.display_title,
            repo=run.repo.name,
            state=TicketState.RUNNING,
            phase="starting",
            model=run.model.name,
            scripted_model=run.model.scripted,
            caps=run.caps,
            attempt=run.attempt,
        )
        self._set_state(TicketState.RUNNING)
        self._resume_clock()
        result: TicketResult | None = None
        ending = (TicketState.CANCELLED, "cancelled by request")
        try:
            result = await self._work(run)
        except _TicketEnded as ended:
            ending = (ended.state, ended.reason)
        except (ActivityError, ChildWorkflowError) as err:
            # A cancelled ticket shows up as its in-flight activity's (or review's) cancellation.
            if not isinstance(err.cause, CancelledError):
                timed_out = isinstance(err.cause, ActivityTimeout) and self._time_left() <= timedelta(0)
                ending = (TicketState.FAILED, self._time_limit_reason() if timed_out else failure_reason(err))
        except (asyncio.CancelledError, CancelledError):
            pass
        # Clean up before the end state is shown: whoever stops following the ticket at its
        # end state finds the sandbox gone. After a cancellation, activities can still run.
        await self._destroy_sandbox()
        if result is not None:
            return result
        final = self._finish(*ending)
        if ending[0] == TicketState.CANCELLED:
            raise asyncio.CancelledError("ticket cancelled")
        return final

    async def _work(self, run: TicketRun) -> TicketResult:
        ticket = run.ticket
        limits = run.limits
        branch = branch_name(ticket, run.attempt)
        status = self._state()
        status.branch = branch

        sandbox = await self._provision(run, instance=1)
        self._phase("cloning")
        clone = await self._on_host(
            TicketActivities.clone_repository,
            CloneRequest(sandbox=sandbox, repo=run.repo),
            summary=f"clone {run.repo.name}@{run.repo.default_branch}",
            timeout_s=600,
        )
        self._log(f"cloned {run.repo.name} at {clone.base_commit[:10]} ({clone.files} files)")

        if run.repo.install_command:
            install = await self._command(run.repo.install_command, "install", limits.test_timeout_s)
            if not install.ok:
                raise _TicketEnded(TicketState.FAILED, f"install command failed (exit {install.exit_code})")

        self._phase("running tests before the change")
        before = await self._command(run.repo.test_command, "tests-before", limits.test_timeout_s)
        self._log(f"tests before: {'pass' if before.ok else 'fail'} (exit {before.exit_code})")

        await self._on_host(
            TicketActivities.begin_transcript,
            TranscriptStart(sandbox=sandbox, run=run, branch=branch, tests_before=before),
            summary="write task prompt",
        )
        agent_summary, after = await self._agent_and_test_gate(run, sandbox)
        head = await self._export_and_push(run, sandbox, clone.base_commit, branch, agent_summary)
        if head is None:
            raise _TicketEnded(TicketState.FAILED, "the agent produced no change (empty diff)")

        self._phase("opening pull request")
        self._pr_body = _pull_request_body(
            run, agent_summary, before, after, self._diffstat, status.spend, status.test_rounds
        )
        pr: PullRequestRef = await workflow.execute_activity_method(
            TicketActivities.open_pull_request,
            PullRequestRequest(
                repo=run.repo,
                head=branch,
                base=run.repo.default_branch,
                title=f"{run.ticket.id}: {run.ticket.display_title}",
                body=self._pr_body,
            ),
            task_queue="execution",
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=limits.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=f"open pull request {branch}",
        )
        status.pull_request = pr
        self._log(f"pull request #{pr.number} {'opened' if pr.created else 'found'}: {pr.url}")
        if run.reviewer is None or run.review is None:
            await self._destroy_sandbox()
            return self._finish(TicketState.READY_FOR_MERGE, f"pull request #{pr.number} is ready for merge")
        return await self._govern(run, pr, clone.base_commit, head)

    async def _govern(self, run: TicketRun, pr: PullRequestRef, base_commit: str, head: str) -> TicketResult:
        """Review → fix rounds until approved; then wait for human comments, which start a fix round too."""
        assert run.reviewer is not None and run.review is not None
        status = self._state()
        fixed = 0
        while True:
            status.review_rounds += 1
            rounds = status.review_rounds
            self._phase(f"review round {rounds}")
            review: ReviewResult = await workflow.execute_child_workflow(
                ReviewWorkflow.run,
                ReviewRequest(
                    ticket=run.ticket,
                    repo=run.repo,
                    model=run.reviewer,
                    caps=run.caps,
                    spent=status.spend,
                    pull_request=pr,
                    branch=pr.head,
                    base_commit=base_commit,
                    head_commit=head,
                    round=rounds,
                    policy=run.review,
                    heartbeat_timeout_s=run.limits.heartbeat_timeout_s,
                ),
                id=f"review-{run.ticket.id}-{head[:12]}",
                task_queue=GOVERNANCE_QUEUE,
                static_summary=f"review {run.ticket.id} round {rounds} ({head[:10]})",
            )
            status.spend = status.spend.plus(review.usage)
            blocking = [f.describe() for f in review.findings if f.blocking]
            status.open_findings = blocking
            self._log(f"review round {rounds}: {review.verdict.value} ({len(blocking)} blocking finding(s))")
            if review.budget_exhausted is not None:
                raise _TicketEnded(TicketState.BUDGET_EXHAUSTED, f"review: {review.budget_exhausted}")
            feedback: str | None = None
            if review.verdict == Verdict.APPROVE:
                feedback = await self._ready_for_merge(run, pr, review, fixed)
                if feedback is None:
                    return self._result(TicketState.READY_FOR_MERGE)
            elif rounds >= run.max_review_rounds:
                raise _TicketEnded(
                    TicketState.NEEDS_HUMAN,
                    f"review still requests changes after {rounds} round(s): " + "; ".join(blocking[:5]),
                )
            else:
                fixed += len(blocking)
                feedback = _review_feedback(review, self._take_comments())
            head = await self._fix_round(run, pr, feedback, rounds)

    async def _ready_for_merge(
        self, run: TicketRun, pr: PullRequestRef, review: ReviewResult, fixed: int
    ) -> str | None:
        """Clean up, tell the team, mark ready, then listen for human comments; returns one to act on, if any.

        The state turns ready_for_merge last, so whoever follows the ticket and stops
        there (the demo, `factory start --follow`) finds its sandbox already gone.
        """
        status = self._state()
        # Nothing left to run in the sandbox while a person reads the PR.
        await self._destroy_sandbox()
        summary = _governance_summary(review, fixed, status)
        await self._best_effort(
            GovernanceActivities.update_pull_request_body,
            PullRequestBodyUpdate(repo=run.repo, number=pr.number, body=f"{self._pr_body}\n\n{summary}"),
            "add the governance summary to the pull request",
        )
        note = Notification(
            title=f"{run.ticket.id} ready for merge: {run.ticket.display_title}",
            text=f"Pull request #{pr.number} ({pr.head}) passed review.",
            url=pr.url,
            fields={
                "checks": ", ".join(review.checks_run),
                "findings fixed": str(fixed),
                "review rounds": str(status.review_rounds),
                "cost": f"${status.spend.cost_usd:.4f}",
            },
        )
        # One activity per channel, so a retry never posts twice to the channel that worked.
        for channel in ("slack", "discord"):
            await self._best_effort(
                GovernanceActivities.notify,
                note.model_copy(update={"channel": channel}),
                f"notify {channel}: ready for merge",
            )
        self._set_state(TicketState.READY_FOR_MERGE)
        status.reason = f"pull request #{pr.number} approved by review; ready for merge"
        self._phase("ready for merge")
        self._log(status.reason)
        if run.await_comments_s > 0:
            await self._tell_parent_ready()
            self._pause_clock()
            try:
                await workflow.wait_condition(
                    lambda: bool(self._comments) or self._closed, timeout=timedelta(seconds=run.await_comments_s)
                )
            except TimeoutError:
                self._log("no comments on the pull request; stopped listening")
            self._resume_clock()
        if self._comments and not self._closed:
            self._set_state(TicketState.RUNNING)
            return _review_feedback(None, self._take_comments())
        return None

    async def _tell_parent_ready(self) -> None:
        """A night shift that started this ticket counts it done now, not when comment listening ends."""
        parent = workflow.info().parent
        # patched(): tickets already waiting for comments when this shipped replay without the signal.
        if parent is None or not workflow.patched("tell-parent-ready"):
            return
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                "ticket_ready", self._result(TicketState.READY_FOR_MERGE)
            )
        except FailureError as err:
            # The parent is gone (a night already over): nobody is waiting for the news.
            workflow.logger.warning("could not tell the parent %s: %s", parent.workflow_id, err)

    async def _fix_round(self, run: TicketRun, pr: PullRequestRef, feedback: str, rounds: int) -> str:
        """A fresh sandbox on the PR branch continues the conversation with the feedback, then pushes."""
        previous = self._last_workspace
        await self._destroy_sandbox()
        instance = self._instances + 1
        sandbox = await self._provision(run, instance=instance)
        clone = await self._on_host(
            TicketActivities.clone_repository,
            CloneRequest(sandbox=sandbox, repo=run.repo, branch=pr.head),
            summary=f"clone {run.repo.name}@{pr.head}",
            timeout_s=600,
        )
        await self._on_host(
            TicketActivities.begin_transcript,
            TranscriptStart(
                sandbox=sandbox,
                run=run,
                branch=pr.head,
                continue_from=previous,
                feedback=feedback,
                feedback_key=f"review-round-{rounds}",
            ),
            summary=f"feed back review round {rounds}",
        )
        summary, _ = await self._agent_and_test_gate(run, sandbox)
        head = await self._export_and_push(run, sandbox, clone.base_commit, pr.head, summary)
        if head is None:
            raise _TicketEnded(
                TicketState.NEEDS_HUMAN, "the agent made no change for the feedback (review findings or PR comments)"
            )
        return head

    async def _provision(self, run: TicketRun, instance: int) -> SandboxHandle:
        self._phase("provisioning sandbox")
        sandbox: SandboxHandle = await workflow.execute_activity_method(
            TicketActivities.provision_sandbox,
            ProvisionRequest(
                ticket_id=run.ticket.id,
                workflow_id=workflow.info().workflow_id,
                image=run.repo.image,
                limits=run.limits.sandbox,
                instance=instance,
            ),
            task_queue="execution",
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=timedelta(seconds=run.limits.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=f"provision sandbox ({run.repo.image})",
        )
        self._sandbox = sandbox
        self._instances = instance
        self._last_workspace = sandbox.workspace
        self._log(f"sandbox {sandbox.name} on {sandbox.task_queue}")
        return sandbox

    async def _agent_and_test_gate(self, run: TicketRun, sandbox: SandboxHandle) -> tuple[str, CommandResult]:
        """The agent works until it submits; the factory's own test run decides (bounded rounds)."""
        status = self._state()
        limits = run.limits
        first_round = status.test_rounds
        while True:
            agent_summary = await self._agent_until_submit(run, sandbox)
            status.test_rounds += 1
            rounds = status.test_rounds
            self._phase(f"test gate, round {rounds}")
            after = await self._command(run.repo.test_command, f"tests-round-{rounds}", limits.test_timeout_s)
            self._log(f"test gate round {rounds}: {'pass' if after.ok else 'fail'} (exit {after.exit_code})")
            if after.ok:
                return agent_summary, after
            if rounds - first_round >= limits.max_test_rounds:
                raise _TicketEnded(TicketState.FAILED, f"tests still fail after {rounds - first_round} test round(s)")
            await self._on_host(
                TicketActivities.add_feedback,
                FeedbackRequest(sandbox=sandbox, key=f"tests-round-{rounds}", text=_test_feedback(run, after, rounds)),
                summary=f"feed back test failure (round {rounds})",
            )

    async def _export_and_push(
        self, run: TicketRun, sandbox: SandboxHandle, base_commit: str, branch: str, agent_summary: str
    ) -> str | None:
        """Export the sandbox's commits and push them; None when there is nothing to push."""
        self._phase("exporting commits")
        export = await self._on_host(
            TicketActivities.export_changes,
            ExportRequest(sandbox=sandbox, base_commit=base_commit, message=_commit_message(run, agent_summary)),
            summary="export commits (git bundle)",
        )
        if export.empty or export.head_commit is None or export.bundle_path is None:
            return None
        self._diffstat = export.diffstat or ", ".join(export.changed_files)
        self._log(f"exported {export.head_commit[:10]}: {self._diffstat}")
        self._phase("pushing")
        pushed = await self._on_host(
            TicketActivities.push_branch,
            PushRequest(
                repo=run.repo,
                branch=branch,
                bundle_path=export.bundle_path,
                base_commit=base_commit,
                head_commit=export.head_commit,
            ),
            summary=f"push {branch}",
            timeout_s=600,
        )
        head: str = pushed.head_commit
        self._log(f"pushed {pushed.branch} at {head[:10]}")
        return head

    async def _best_effort(self, activity, request, summary: str) -> None:  # type: ignore[no-untyped-def]
        """Governance side effects that must never fail the ticket (notifications, PR summary)."""
        try:
            await workflow.execute_activity_method(
                activity,
                request,
                task_queue=GOVERNANCE_QUEUE,
                start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=timedelta(seconds=self._run.limits.heartbeat_timeout_s),
                retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=30)),
                summary=summary,
            )
        except ActivityError as err:
            self._log(f"{summary}: not done ({failure_reason(err)})")

    # -- messages from people -----------------------------------------------------------

    @workflow.signal
    def comment(self, comment: HumanComment) -> None:
        """A human comment on the pull request: the next fix round acts on it."""
        self._comments.append(comment)

    @workflow.signal
    def pull_request_closed(self) -> None:
        """The pull request was merged or closed: stop listening for comments."""
        self._closed = True

    def _take_comments(self) -> list[HumanComment]:
        taken, self._comments = self._comments, []
        return taken

    async def _agent_until_submit(self, run: TicketRun, sandbox: SandboxHandle) -> str:
        """Model call → tool calls → … until the agent submits, or a cap is reached."""
        status = self._state()
        while True:
            cap = status.spend.exhausted_cap(run.caps)
            if cap is not None:
                raise _TicketEnded(
                    TicketState.BUDGET_EXHAUSTED, f"{cap} cap reached: {status.spend.describe(run.caps)}"
                )
            step = status.step + 1
            self._phase(f"agent step {step}")
            result = await self._on_host(
                TicketActivities.model_step,
                ModelStepRequest(sandbox=sandbox, model=run.model, caps=run.caps, step=step, spent=status.spend),
                summary=f"model step {step}",
                timeout_s=int(run.model.timeout_s) + 60,
            )
            if result.budget_exhausted is not None:
                raise _TicketEnded(
                    TicketState.BUDGET_EXHAUSTED,
                    f"{result.budget_exhausted}; spent {status.spend.describe(run.caps)}",
                )
            status.step = step
            status.spend = status.spend.plus(result.usage)
            self._log(
                f"step {step}: "
                + (", ".join(c.summary for c in result.tool_calls) or result.text[:80] or "(no action)")
            )
            if not result.tool_calls:
                await self._on_host(
                    TicketActivities.add_feedback,
                    FeedbackRequest(
                        sandbox=sandbox,
                        key=f"nudge-{step}",
                        text="Use the tools to make the change, then call `submit` when the tests pass.",
                    ),
                    summary="remind the agent to use its tools",
                )
                continue
            submitted: str | None = None
            for call in result.tool_calls:
                outcome = await self._on_host(
                    TicketActivities.tool_step,
                    ToolCallRequest(
                        sandbox=sandbox,
                        step=step,
                        call_id=call.call_id,
                        timeout_s=run.limits.command_timeout_s,
                        output_chars=run.limits.tool_output_chars,
                    ),
                    summary=call.summary,
                    timeout_s=run.limits.command_timeout_s + 60,
                )
                if outcome.submitted:
                    submitted = outcome.message or ""
            if submitted is not None:
                return submitted

    # -- helpers ---------------------------------------------------------------------

    async def _on_host(self, activity, request, *, summary: str, timeout_s: int = 120):  # type: ignore[no-untyped-def]
        """Run an activity on the worker that holds the sandbox's workspace, within the ticket's time limit."""
        assert self._sandbox is not None
        remaining = self._time_left()
        if remaining <= timedelta(0):
            raise _TicketEnded(TicketState.FAILED, self._time_limit_reason())
        return await workflow.execute_activity_method(
            activity,
            request,
            task_queue=self._sandbox.task_queue,
            start_to_close_timeout=min(timedelta(seconds=timeout_s), remaining),
            schedule_to_close_timeout=remaining,
            heartbeat_timeout=timedelta(seconds=self._run.limits.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=summary[:200],
        )

    # -- the ticket's wall-clock limit (time spent listening for comments does not count) --

    def _time_left(self) -> timedelta:
        running = workflow.now() - self._clock_started if self._clock_started is not None else timedelta(0)
        return timedelta(seconds=self._run.limits.ticket_timeout_s) - self._time_used - running

    def _pause_clock(self) -> None:
        if self._clock_started is not None:
            self._time_used += workflow.now() - self._clock_started
            self._clock_started = None

    def _resume_clock(self) -> None:
        self._clock_started = workflow.now()

    def _time_limit_reason(self) -> str:
        return f"ticket wall-clock limit of {self._run.limits.ticket_timeout_s}s reached"

    async def _command(self, command: str, purpose: str, timeout_s: int) -> CommandResult:
        assert self._sandbox is not None
        result: CommandResult = await self._on_host(
            TicketActivities.run_command,
            CommandRequest(sandbox=self._sandbox, command=command, timeout_s=timeout_s, purpose=purpose),
            summary=f"bash: {command}",
            timeout_s=timeout_s + 60,
        )
        return result

    async def _destroy_sandbox(self) -> None:
        if self._sandbox is None:
            return
        try:
            await workflow.execute_activity_method(
                TicketActivities.destroy_sandbox,
                self._sandbox,
                task_queue=self._sandbox.task_queue,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=timedelta(seconds=self._run.limits.heartbeat_timeout_s),
                retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=20)),
                summary=f"destroy sandbox {self._sandbox.name}",
            )
        except ActivityError as err:
            # The reaper removes what is left; the ticket's outcome stands.
            workflow.logger.warning("sandbox %s not destroyed: %s", self._sandbox.name, failure_reason(err))
        self._sandbox = None

    def _state(self) -> TicketStatus:
        assert self._status is not None
        return self._status

    def _phase(self, phase: str) -> None:
        status = self._state()
        status.phase = phase
        workflow.set_current_details(
            f"**{status.ticket_id}** {status.title}\n\n"
            f"state: {status.state.value} · phase: {phase} · step {status.step} · "
            f"{status.spend.describe(status.caps)}"
            + (f"\n\nPR: {status.pull_request.url}" if status.pull_request else "")
        )

    def _log(self, line: str) -> None:
        status = self._state()
        status.log = [*status.log, line][-_LOG_LINES:]
        workflow.logger.info(line)

    def _set_state(self, state: TicketState) -> None:
        self._state().state = state
        # Kept current only when the starter set it: a server without our
        # attributes registered would otherwise fail every workflow task.
        if workflow.info().typed_search_attributes.get(TICKET_STATE) is not None:
            workflow.upsert_search_attributes([TICKET_STATE.value_set(state.value)])

    def _finish(self, state: TicketState, reason: str) -> TicketResult:
        status = self._state()
        self._set_state(state)
        status.reason = reason
        self._phase("done")
        self._log(f"{state.value}: {reason}")
        return self._result(state)

    def _result(self, state: TicketState) -> TicketResult:
        return self._state().result(state)


def _test_feedback(run: TicketRun, result: CommandResult, rounds: int) -> str:
    return (
        f"The factory ran `{run.repo.test_command}` after your submission and it failed "
        f"(exit code {result.exit_code}{', timed out' if result.timed_out else ''}); "
        f"this was test round {rounds} of {run.limits.max_test_rounds}. Fix the problem and submit again.\n"
        f"```\n{result.output_tail[-4000:]}\n```"
    )


def _commit_message(run: TicketRun, summary: str) -> str:
    title = f"{run.ticket.id}: {run.ticket.display_title}"[:72]
    body = summary.strip()[:2000]
    return f"{title}\n\n{body}\n\nTicket: {run.ticket.id}" if body else f"{title}\n\nTicket: {run.ticket.id}"


def _pull_request_body(
    run: TicketRun,
    summary: str,
    before: CommandResult,
    after: CommandResult | None,
    diffstat: str,
    spend: Spend,
    rounds: int,
) -> str:
    ticket = run.ticket

    def verdict(result: CommandResult | None) -> str:
        if result is None:
            return "not run"
        return "✅ pass" if result.ok else f"❌ fail (exit code {result.exit_code})"

    def block(result: CommandResult | None) -> str:
        tail = "" if result is None else result.output_tail[-1500:].strip()
        return f"<details><summary>output</summary>\n\n```\n{tail}\n```\n</details>"

    model = f"{run.model.name}" + (" (offline scripted model, not a real LLM)" if run.model.scripted else "")
    lines = [
        f"Ticket **{ticket.id}** ({ticket.type.value}, priority {ticket.priority.value}): {ticket.display_title}",
        "",
        summary.strip() or "(no summary given)",
        "",
        "### Acceptance criteria",
        *[f"- {item}" for item in ticket.acceptance_criteria],
        "",
        f"### Tests (`{run.repo.test_command}`)",
        f"- before the change: {verdict(before)}",
        block(before),
        f"- after the change: {verdict(after)} (test rounds: {rounds})",
        block(after),
        "",
        f"### Change\n{diffstat or '(see diff)'}",
        "",
        f"### Spend\n{spend.describe(run.caps)} · model: {model}",
        "",
        "_Opened by the Software Factory. A human merges._",
    ]
    return "\n".join(lines)


def _review_feedback(review: ReviewResult | None, comments: list[HumanComment]) -> str:
    lines: list[str] = []
    if review is not None:
        lines.append(f"The factory's review of your change requests changes (round {review.round}). Fix these:")
        lines += [f"- {f.describe()}" for f in review.findings if f.blocking]
    if comments:
        lines.append("A person commented on the pull request:")
        lines += [f"- {c.author}: {c.text}" for c in comments]
    lines.append("Make the changes, run the tests, and call `submit` when done.")
    return "\n".join(lines)


def _governance_summary(review: ReviewResult, fixed: int, status: TicketStatus) -> str:
    return "\n".join(
        [
            "### Governance",
            f"- checks run: {', '.join(review.checks_run)}",
            f"- review rounds: {status.review_rounds}; findings fixed along the way: {fixed}",
            f"- open notes: {len(review.findings)} (none blocking)",
            f"- spend: {status.spend.describe(status.caps)}",
        ]
    )
