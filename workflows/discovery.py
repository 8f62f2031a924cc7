"""DiscoveryWorkflow: keep the backlog full of tickets nobody wrote by hand.

For each repo: the Log Miner and the Dependency Watchdog run on the host side,
the Coverage Analyst runs the repo's tests with coverage in a sandbox. Each
source's findings are filed in the tracker as soon as they are in, so a run
that stops half-way keeps what it found, and a retried filing counts nothing
twice. One source failing is a warning in the result, not the end of the run.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.discovery import DiscoveryActivities
    from activities.ticket import TicketActivities
    from factory.models import (
        CloneRequest,
        CommandRequest,
        CommandResult,
        CoverageReportRequest,
        DiscoveryPlan,
        DiscoveryRecord,
        DiscoveryRequest,
        DiscoveryResult,
        DiscoverySource,
        DiscoveryTarget,
        FileProblemsRequest,
        ProblemBatch,
        ProvisionRequest,
        RepoInspection,
        SandboxHandle,
    )
    from workflows.retry import ACTIVITY_RETRY, failure_reason

__all__ = ["DISCOVERY_QUEUE", "DiscoveryWorkflow"]

DISCOVERY_QUEUE = "discovery"


@workflow.defn
class DiscoveryWorkflow:
    def __init__(self) -> None:
        self._result = DiscoveryResult()
        self._phase = "planning"

    @workflow.query
    def progress(self) -> DiscoveryResult:
        return self._result

    @workflow.query
    def phase(self) -> str:
        return self._phase

    @workflow.run
    async def run(self, request: DiscoveryRequest) -> DiscoveryResult:
        plan: DiscoveryPlan = await workflow.execute_activity_method(
            DiscoveryActivities.plan_discovery,
            request,
            task_queue=DISCOVERY_QUEUE,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=ACTIVITY_RETRY,
            summary="plan: repos and sources",
        )
        for number, target in enumerate(plan.targets, start=1):
            for source in target.sources:
                self._phase = f"{target.repo.name}: {source.value}"
                batch = await self._inspect(target, source, number)
                if batch is not None:
                    await self._file(batch)
        self._phase = "done"
        return self._result

    async def _inspect(self, target: DiscoveryTarget, source: DiscoverySource, number: int) -> ProblemBatch | None:
        inspection = RepoInspection(target=target, key=self._key(target, source))
        try:
            if source == DiscoverySource.LOGS:
                return await self._on_discovery(DiscoveryActivities.mine_logs, inspection, "mine logs", 10)
            if source == DiscoverySource.DEPS:
                return await self._on_discovery(DiscoveryActivities.audit_dependencies, inspection, "audit deps", 15)
            return await self._coverage(target, number)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # a cancelled run stops here; it is not one source failing
            self._result.warnings.append(f"{target.repo.name}: {source.value} failed: {failure_reason(err)}")
            return None

    async def _on_discovery(self, activity, request, what: str, minutes: int) -> ProblemBatch:  # type: ignore[no-untyped-def]
        batch: ProblemBatch = await workflow.execute_activity_method(
            activity,
            request,
            task_queue=DISCOVERY_QUEUE,
            start_to_close_timeout=timedelta(minutes=minutes),
            heartbeat_timeout=timedelta(seconds=request.target.limits.heartbeat_timeout_s),
            retry_policy=ACTIVITY_RETRY,
            summary=f"{what}: {request.target.repo.name}",
        )
        return batch

    async def _coverage(self, target: DiscoveryTarget, number: int) -> ProblemBatch:
        """Run the repo's tests with coverage in a sandbox and rank what they leave uncovered.

        ``number`` (the repo's place in the run) gives each repo its own sandbox: a sandbox whose
        destruction failed is never reused for the next repo.
        """
        heartbeat = timedelta(seconds=target.limits.heartbeat_timeout_s)
        sandbox: SandboxHandle = await workflow.execute_activity_method(
            TicketActivities.provision_sandbox,
            ProvisionRequest(
                ticket_id=f"discovery-{target.repo.name}",
                workflow_id=workflow.info().workflow_id,
                image=target.repo.image,
                limits=target.limits.sandbox,
                instance=number,
            ),
            task_queue="execution",
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=heartbeat,
            retry_policy=ACTIVITY_RETRY,
            summary=f"provision sandbox for coverage: {target.repo.name}",
        )
        try:

            async def on_host(activity, request, summary: str, timeout_s: int):  # type: ignore[no-untyped-def]
                return await workflow.execute_activity_method(
                    activity,
                    request,
                    task_queue=sandbox.task_queue,
                    start_to_close_timeout=timedelta(seconds=timeout_s),
                    heartbeat_timeout=heartbeat,
                    retry_policy=ACTIVITY_RETRY,
                    summary=summary[:200],
                )

            await on_host(
                TicketActivities.clone_repository, CloneRequest(sandbox=sandbox, repo=target.repo), "clone", 300
            )
            if target.repo.install_command:
                installed = await self._command(on_host, sandbox, target.repo.install_command, "install", target)
                if not installed.ok:
                    return self._coverage_skipped(target, "install", installed)
            command = await self._command(on_host, sandbox, target.coverage_command, "coverage", target)
            if command.timed_out:
                return self._coverage_skipped(target, "coverage run", command)
            batch: ProblemBatch = await on_host(
                DiscoveryActivities.read_coverage,
                CoverageReportRequest(sandbox=sandbox, target=target, command=command),
                f"read coverage: {target.repo.name}",
                300,
            )
            return batch
        finally:
            await self._destroy(sandbox, heartbeat)

    async def _command(self, on_host, sandbox: SandboxHandle, command: str, purpose: str, target: DiscoveryTarget):  # type: ignore[no-untyped-def]
        timeout_s = target.limits.test_timeout_s
        result: CommandResult = await on_host(
            TicketActivities.run_command,
            CommandRequest(sandbox=sandbox, command=command, timeout_s=timeout_s, purpose=purpose),
            f"bash: {command}",
            timeout_s + 60,
        )
        return result

    def _coverage_skipped(self, target: DiscoveryTarget, step: str, result: CommandResult) -> ProblemBatch:
        how = f"timed out after {target.limits.test_timeout_s}s" if result.timed_out else f"exit {result.exit_code}"
        return ProblemBatch(
            repo=target.repo.name,
            source=DiscoverySource.COVERAGE,
            warnings=[f"{target.repo.name}: the {step} in the sandbox failed ({how}); no coverage tickets"],
        )

    async def _destroy(self, sandbox: SandboxHandle, heartbeat: timedelta) -> None:
        # Runs on cancellation too: a cancelled run must not leave its sandbox behind.
        try:
            await workflow.execute_activity_method(
                TicketActivities.destroy_sandbox,
                sandbox,
                task_queue=sandbox.task_queue,
                start_to_close_timeout=timedelta(minutes=2),
                heartbeat_timeout=heartbeat,
                retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=20)),
                summary=f"destroy sandbox {sandbox.name}",
            )
        except (ActivityError, CancelledError) as err:
            workflow.logger.warning("sandbox %s not destroyed: %s", sandbox.name, err)

    async def _file(self, batch: ProblemBatch) -> None:
        self._result.warnings.extend(batch.warnings)
        self._result.examined[f"{batch.repo}/{batch.source.value}"] = batch.examined
        if not batch.problems:
            return
        records: list[DiscoveryRecord] = await workflow.execute_activity_method(
            DiscoveryActivities.file_problems,
            FileProblemsRequest(batch=batch, key=self._key_for(batch.repo, batch.source)),
            task_queue=DISCOVERY_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=ACTIVITY_RETRY,
            summary=f"file {len(batch.problems)} {batch.source.value} problem(s) for {batch.repo}",
        )
        self._result.records.extend(records)

    def _key(self, target: DiscoveryTarget, source: DiscoverySource) -> str:
        return self._key_for(target.repo.name, source)

    def _key_for(self, repo: str, source: DiscoverySource) -> str:
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}/{repo}/{source.value}"
