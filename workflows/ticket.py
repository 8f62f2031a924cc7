"""TicketWorkflow: one ticket becomes one pull request, durably.

Orchestration only. Every side effect is an activity; every model call and every
tool call is its own activity, so after a crash Temporal replays this code up to
the last finished step and no finished model call is made again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.ticket import TicketActivities
    from factory.models import (
        CloneRequest,
        CommandRequest,
        CommandResult,
        ExportRequest,
        FeedbackRequest,
        ModelStepRequest,
        ProvisionRequest,
        PullRequestRef,
        PullRequestRequest,
        PushRequest,
        SandboxHandle,
        Spend,
        TicketResult,
        TicketRun,
        TicketState,
        TicketStatus,
        ToolCallRequest,
        TranscriptStart,
        branch_name,
    )
    from workflows.search_attributes import TICKET_STATE

__all__ = ["PERMANENT_ERRORS", "TicketWorkflow"]

# Error types (FactoryError class names) that no retry can fix.
PERMANENT_ERRORS = [
    "ConfigError",
    "TicketInvalid",
    "UnknownRepo",
    "ImageMissing",
    "SandboxGone",
    "CommandTimeout",
    "BundleRejected",
    "ProtectedBranchRefused",
    "ModelPriceUnknown",
    "ModelRequestRefused",
    "BudgetExhausted",
    "PlaybookError",
]

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=PERMANENT_ERRORS,
)
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
            state=TicketState.RUNNING,
            phase="starting",
            model=run.model.name,
            scripted_model=run.model.scripted,
            caps=run.caps,
        )
        self._set_state(TicketState.RUNNING)
        cancelled = False
        try:
            result = await self._work(run)
        except _TicketEnded as ended:
            result = self._finish(ended.state, ended.reason)
        except ActivityError as err:
            # A cancelled ticket shows up as its in-flight activity's cancellation.
            cancelled = isinstance(err.cause, CancelledError)
            result = self._finish(TicketState.FAILED, _failure_reason(err))
        except (asyncio.CancelledError, CancelledError):
            cancelled = True
        if cancelled:
            self._finish(TicketState.CANCELLED, "cancelled by request")
        # After a cancellation was delivered, new activities can still run: clean up first.
        await self._destroy_sandbox()
        if cancelled:
            raise asyncio.CancelledError("ticket cancelled")
        return result

    async def _work(self, run: TicketRun) -> TicketResult:
        ticket = run.ticket
        limits = run.limits
        branch = branch_name(ticket)
        status = self._state()
        status.branch = branch

        self._phase("provisioning sandbox")
        sandbox = await workflow.execute_activity_method(
            TicketActivities.provision_sandbox,
            ProvisionRequest(
                ticket_id=ticket.id,
                workflow_id=workflow.info().workflow_id,
                image=run.repo.image,
                limits=limits.sandbox,
            ),
            task_queue="execution",
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=timedelta(seconds=limits.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=f"provision sandbox ({run.repo.image})",
        )
        self._sandbox = sandbox
        self._log(f"sandbox {sandbox.name} on {sandbox.task_queue}")

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

        agent_summary = ""
        after: CommandResult | None = None
        while True:
            agent_summary = await self._agent_until_submit(run, sandbox)
            status.test_rounds += 1
            rounds = status.test_rounds
            self._phase(f"test gate, round {rounds}")
            after = await self._command(run.repo.test_command, f"tests-round-{rounds}", limits.test_timeout_s)
            self._log(f"test gate round {rounds}: {'pass' if after.ok else 'fail'} (exit {after.exit_code})")
            if after.ok:
                break
            if rounds >= limits.max_test_rounds:
                raise _TicketEnded(TicketState.FAILED, f"tests still fail after {rounds} test round(s)")
            await self._on_host(
                TicketActivities.add_feedback,
                FeedbackRequest(sandbox=sandbox, key=f"tests-round-{rounds}", text=_test_feedback(run, after, rounds)),
                summary=f"feed back test failure (round {rounds})",
            )

        self._phase("exporting commits")
        export = await self._on_host(
            TicketActivities.export_changes,
            ExportRequest(sandbox=sandbox, base_commit=clone.base_commit, message=_commit_message(run, agent_summary)),
            summary="export commits (git bundle)",
        )
        if export.empty or export.head_commit is None or export.bundle_path is None:
            raise _TicketEnded(TicketState.FAILED, "the agent produced no change (empty diff)")
        self._log(f"exported {export.head_commit[:10]}: {export.diffstat or ', '.join(export.changed_files)}")

        self._phase("pushing")
        pushed = await self._on_host(
            TicketActivities.push_branch,
            PushRequest(
                repo=run.repo,
                branch=branch,
                bundle_path=export.bundle_path,
                base_commit=clone.base_commit,
                head_commit=export.head_commit,
            ),
            summary=f"push {branch}",
            timeout_s=600,
        )
        self._log(f"pushed {pushed.branch} at {pushed.head_commit[:10]}")

        self._phase("opening pull request")
        body = _pull_request_body(run, agent_summary, before, after, export.diffstat, status.spend, status.test_rounds)
        pr: PullRequestRef = await workflow.execute_activity_method(
            TicketActivities.open_pull_request,
            PullRequestRequest(
                repo=run.repo,
                head=branch,
                base=run.repo.default_branch,
                title=f"{run.ticket.id}: {run.ticket.display_title}",
                body=body,
            ),
            task_queue="execution",
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_RETRY,
            summary=f"open pull request {branch}",
        )
        status.pull_request = pr
        self._log(f"pull request #{pr.number} {'opened' if pr.created else 'found'}: {pr.url}")
        return self._finish(TicketState.READY_FOR_MERGE, f"pull request #{pr.number} is ready for merge")

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
        """Run an activity on the worker that holds the sandbox's workspace."""
        assert self._sandbox is not None
        return await workflow.execute_activity_method(
            activity,
            request,
            task_queue=self._sandbox.task_queue,
            start_to_close_timeout=timedelta(seconds=timeout_s),
            heartbeat_timeout=timedelta(seconds=self._run.limits.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=summary[:200],
        )

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
            workflow.logger.warning("sandbox %s not destroyed: %s", self._sandbox.name, _failure_reason(err))
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
        return TicketResult(
            ticket_id=status.ticket_id,
            state=state,
            reason=reason,
            spend=status.spend,
            caps=status.caps,
            branch=status.branch,
            pull_request=status.pull_request,
            test_rounds=status.test_rounds,
        )


def _failure_reason(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type}: {cause.message}" if cause.type else cause.message
    return str(cause or err)


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
