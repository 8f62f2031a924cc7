"""Activities of the discovery loop: thin adapters from Temporal to ``factory.discovery``.

Planning, log mining, the dependency audit and filing run on the ``discovery``
queue; reading a coverage report runs on the host that holds the sandbox's
workspace (its ``execution@<host>`` queue), like every other sandbox activity.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity

from activities.ticket import boundary, in_thread
from factory.config import Settings
from factory.discovery.loop import (
    audit_repo_dependencies,
    file_batch,
    mine_repo_logs,
    plan_discovery,
    read_coverage_report,
)
from factory.forge.gitops import clone_for_reading
from factory.models import (
    CoverageReportRequest,
    DiscoveryPlan,
    DiscoveryRecord,
    DiscoveryRequest,
    FileProblemsRequest,
    ProblemBatch,
    RepoInspection,
)
from factory.sandbox import Workspace
from factory.trackers import tracker_for

__all__ = ["DiscoveryActivities"]


class DiscoveryActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn
    @boundary
    async def plan_discovery(self, request: DiscoveryRequest) -> DiscoveryPlan:
        """Resolve the run's repos and sources from configuration."""
        return plan_discovery(self.settings, request)

    @activity.defn
    @boundary
    async def mine_logs(self, request: RepoInspection) -> ProblemBatch:
        """Log Miner: group the repo's exported errors; each recurring group is a bug ticket."""
        return await in_thread(mine_repo_logs, self.settings, request.target, datetime.now(UTC))

    @activity.defn
    @boundary
    async def audit_dependencies(self, request: RepoInspection) -> ProblemBatch:
        """Dependency Watchdog: deprecated, vulnerable or far-behind packages of the repo's manifests."""
        return await in_thread(audit_repo_dependencies, self.settings, request.target)

    @activity.defn
    @boundary
    async def read_coverage(self, request: CoverageReportRequest) -> ProblemBatch:
        """Coverage Analyst: rank the modules of the report the sandbox's coverage run wrote."""
        target = request.target

        def run() -> ProblemBatch:
            with tempfile.TemporaryDirectory(prefix="factory-discovery-") as scratch:
                recent = clone_for_reading(target.repo.clone_url, Path(scratch) / "repo", target.repo.default_branch)
            batch = read_coverage_report(self.settings, target, Workspace(Path(request.sandbox.workspace)).out, recent)
            if request.command.exit_code != 0:
                batch.warnings.append(
                    f"{target.repo.name}: the tests failed under coverage (exit {request.command.exit_code}); "
                    "coverage figures may be low"
                )
            return batch

        return await in_thread(run)

    @activity.defn
    @boundary
    async def file_problems(self, request: FileProblemsRequest) -> list[DiscoveryRecord]:
        """Record the batch in the tracker: new problems become tickets, known ones are updated or reopened."""
        tracker = tracker_for(self.settings)
        return await in_thread(file_batch, tracker, request.batch, request.key)

    def all(self) -> list[Any]:
        return [self.plan_discovery, self.mine_logs, self.audit_dependencies, self.read_coverage, self.file_problems]
