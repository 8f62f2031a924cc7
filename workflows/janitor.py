"""JanitorWorkflow: the weekly dependency update, one pull request per repository.

Per repository, in a sandbox: install the project and run its tests as they are,
list the outdated dependencies, then for each in turn update it, run the tests,
and commit it or put everything back and record why. The commits are exported as a
bundle, verified and pushed from the host to the update branch, and one pull
request is opened, or the open one brought up to date. Nothing to update: no push,
no pull request. The sandbox is destroyed in every case.

Orchestration only; every step is an activity, so a crash resumes at the package
it had reached.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.janitor import JanitorActivities, sandbox_timeout_s
    from activities.ticket import TicketActivities
    from factory.models import (
        CloneRequest,
        ExportRequest,
        JanitorBranch,
        JanitorPlan,
        JanitorPublish,
        JanitorRepoResult,
        JanitorRequest,
        JanitorResult,
        JanitorSurveyRequest,
        JanitorUpdate,
        JanitorUpdateRequest,
        ProvisionRequest,
        PushRequest,
        SandboxHandle,
    )
    from workflows.retry import ACTIVITY_RETRY, failure_reason

__all__ = ["JanitorWorkflow"]

_QUEUE = "execution"


class _RepoEnded(Exception):
    """Internal: a repository's run ends early with an outcome and a reason."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@workflow.defn
class JanitorWorkflow:
    def __init__(self) -> None:
        self._results: list[JanitorRepoResult] = []
        self._current: str = ""

    @workflow.query
    def status(self) -> JanitorResult:
        return JanitorResult(repos=self._results)

    @workflow.run
    async def run(self, request: JanitorRequest) -> JanitorResult:
        plans: list[JanitorPlan] = await workflow.execute_activity_method(
            JanitorActivities.plan_janitor,
            request,
            task_queue=_QUEUE,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=ACTIVITY_RETRY,
            summary="resolve the repos to update",
        )
        for number, plan in enumerate(plans, start=1):
            self._results.append(await self._repo(plan, number))
        return JanitorResult(repos=self._results)

    async def _repo(self, plan: JanitorPlan, number: int) -> JanitorRepoResult:
        # Each repo gets its own sandbox (instance ``number``): one whose destruction failed is never reused.
        name = plan.repo.name
        self._current = name
        updates: list[JanitorUpdate] = []
        sandbox: SandboxHandle | None = None
        try:
            sandbox = await workflow.execute_activity_method(
                TicketActivities.provision_sandbox,
                ProvisionRequest(
                    ticket_id=f"janitor-{name}",
                    workflow_id=workflow.info().workflow_id,
                    image=plan.repo.image,
                    limits=plan.limits.sandbox,
                    instance=number,
                ),
                task_queue=_QUEUE,
                start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=timedelta(seconds=plan.limits.heartbeat_timeout_s),
                retry_policy=ACTIVITY_RETRY,
                summary=f"provision sandbox for {name}",
            )
            return await self._work(plan, sandbox, updates)
        except _RepoEnded as ended:
            return self._ended(name, ended.outcome, ended.reason, updates)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            return self._ended(name, "failed", failure_reason(err), updates)
        finally:
            if sandbox is not None:
                await self._destroy(plan, sandbox)

    async def _work(self, plan: JanitorPlan, sandbox: SandboxHandle, updates: list[JanitorUpdate]) -> JanitorRepoResult:
        name = plan.repo.name
        # Installing and testing may each take the test time limit (the script's own limit), plus
        # two minutes for reading the manifests and writing the logs.
        long_s = sandbox_timeout_s(plan.limits.test_timeout_s) + 120
        clone = await self._on_host(
            plan,
            sandbox,
            TicketActivities.clone_repository,
            CloneRequest(sandbox=sandbox, repo=plan.repo),
            summary=f"clone {name}@{plan.repo.default_branch}",
            timeout_s=600,
        )
        survey = await self._on_host(
            plan,
            sandbox,
            JanitorActivities.survey_dependencies,
            JanitorSurveyRequest(sandbox=sandbox, plan=plan),
            summary=f"install, test and list outdated packages of {name}",
            timeout_s=long_s,
        )
        if survey.problem is not None:
            raise _RepoEnded("nothing_to_update" if survey.kind is None else "failed", survey.problem)
        if not survey.outdated:
            reason = "every dependency is up to date"
            if survey.rejected:
                reason += f"; {len(survey.rejected)} left out: " + "; ".join(survey.rejected[:5])
            raise _RepoEnded("nothing_to_update", reason)

        for package in survey.outdated[: plan.max_packages]:
            label = f"{package.name} {package.current} → {package.latest}"
            if plan.check_dependencies:
                reasons: list[str] = await workflow.execute_activity_method(
                    JanitorActivities.check_update,
                    package,
                    task_queue=_QUEUE,
                    start_to_close_timeout=timedelta(minutes=2),
                    retry_policy=ACTIVITY_RETRY,
                    summary=f"hallucination check {label}",
                )
                if reasons:
                    updates.append(
                        JanitorUpdate(
                            package=package, committed=False, reason="Hallucination Check: " + "; ".join(reasons)
                        )
                    )
                    continue
            outcome: JanitorUpdate = await self._on_host(
                plan,
                sandbox,
                JanitorActivities.try_update,
                JanitorUpdateRequest(sandbox=sandbox, plan=plan, package=package),
                summary=f"update {label}, run the tests",
                timeout_s=long_s,
            )
            updates.append(outcome)

        committed = [u for u in updates if u.committed]
        if not committed:
            raise _RepoEnded("nothing_to_update", f"no update passed ({len(updates)} tried)")

        branch: JanitorBranch = await workflow.execute_activity_method(
            JanitorActivities.branch_problem,
            plan,
            task_queue=_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=ACTIVITY_RETRY,
            summary=f"check {plan.branch} holds only the janitor's commits",
        )
        if branch.problem is not None:
            raise _RepoEnded("failed", branch.problem)
        export = await self._on_host(
            plan,
            sandbox,
            TicketActivities.export_changes,
            ExportRequest(sandbox=sandbox, base_commit=clone.base_commit, message="Janitor: dependency updates"),
            summary="export commits (git bundle)",
        )
        if export.empty or export.head_commit is None or export.bundle_path is None:
            raise _RepoEnded("failed", "the committed updates did not export")
        pushed = await self._on_host(
            plan,
            sandbox,
            TicketActivities.push_branch,
            PushRequest(
                repo=plan.repo,
                branch=plan.branch,
                bundle_path=export.bundle_path,
                base_commit=clone.base_commit,
                head_commit=export.head_commit,
                # The tip judged above ("": absent): anything pushed since makes this push fail.
                expected_remote_sha=branch.tip or "",
            ),
            summary=f"push {plan.branch}",
            timeout_s=600,
        )
        pr = await workflow.execute_activity_method(
            JanitorActivities.publish_pull_request,
            JanitorPublish(plan=plan, head_commit=pushed.head_commit, updates=updates, stale_locks=survey.stale_locks),
            task_queue=_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=ACTIVITY_RETRY,
            summary=f"open or update the pull request of {plan.branch}",
        )
        skipped = len(updates) - len(committed)
        return JanitorRepoResult(
            repo=name,
            outcome="pull_request",
            reason=f"pull request #{pr.number} {'opened' if pr.created else 'updated'}: "
            f"{len(committed)} updated, {skipped} skipped",
            updates=updates,
            pull_request=pr,
        )

    async def _on_host(self, plan, sandbox, activity, request, *, summary: str, timeout_s: int = 120):  # type: ignore[no-untyped-def]
        """Sandbox activities run on the worker that holds the workspace (sandbox affinity)."""
        return await workflow.execute_activity_method(
            activity,
            request,
            task_queue=sandbox.task_queue,
            start_to_close_timeout=timedelta(seconds=timeout_s),
            heartbeat_timeout=timedelta(seconds=plan.limits.heartbeat_timeout_s),
            retry_policy=ACTIVITY_RETRY,
            summary=summary[:200],
        )

    async def _destroy(self, plan: JanitorPlan, sandbox: SandboxHandle) -> None:
        # Shielded: a cancelled run still removes its sandbox.
        try:
            await asyncio.shield(
                workflow.execute_activity_method(
                    TicketActivities.destroy_sandbox,
                    sandbox,
                    task_queue=sandbox.task_queue,
                    start_to_close_timeout=timedelta(minutes=2),
                    heartbeat_timeout=timedelta(seconds=plan.limits.heartbeat_timeout_s),
                    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=20)),
                    summary=f"destroy sandbox {sandbox.name}",
                )
            )
        except ActivityError as err:
            # The reaper removes what is left; the outcome stands.
            workflow.logger.warning("sandbox %s not destroyed: %s", sandbox.name, failure_reason(err))

    def _ended(self, repo: str, outcome: str, reason: str, updates: list[JanitorUpdate]) -> JanitorRepoResult:
        workflow.logger.info("janitor %s: %s (%s)", repo, outcome, reason)
        return JanitorRepoResult.model_validate(
            {"repo": repo, "outcome": outcome, "reason": reason, "updates": updates}
        )
