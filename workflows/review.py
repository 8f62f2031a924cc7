"""ReviewWorkflow: no AI-generated change reaches a human without passing the checks.

Started by TicketWorkflow as a child on the ``governance`` queue for every pushed
commit of a ticket's pull request. Its child workflow id names the commit, so a
replayed or retried ticket never reviews the same commit twice, and posting is
idempotent per commit and finding anyway.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.review import GovernanceActivities
    from factory.models import (
        Finding,
        PostReviewRequest,
        ReviewPart,
        ReviewRequest,
        ReviewResult,
        Spend,
        Verdict,
        verdict_for,
    )
    from workflows.retry import ACTIVITY_RETRY

__all__ = ["GOVERNANCE_QUEUE", "ReviewWorkflow"]

GOVERNANCE_QUEUE = "governance"

_RETRY = ACTIVITY_RETRY


@workflow.defn
class ReviewWorkflow:
    @workflow.run
    async def run(self, request: ReviewRequest) -> ReviewResult:
        workflow.set_current_details(
            f"reviewing {request.branch} at {request.head_commit[:10]} (round {request.round})"
        )

        def check(activity, summary: str, minutes: int = 10):  # type: ignore[no-untyped-def]
            return workflow.execute_activity_method(
                activity,
                request,
                task_queue=GOVERNANCE_QUEUE,
                start_to_close_timeout=timedelta(minutes=minutes),
                heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
                retry_policy=_RETRY,
                summary=summary,
            )

        parts: list[ReviewPart] = list(
            await asyncio.gather(
                check(GovernanceActivities.review_change, "reviewer: lint, docstrings, tests, secrets, paths, size"),
                check(GovernanceActivities.check_dependencies, "hallucination check: new dependencies"),
                check(GovernanceActivities.critique_change, f"reviewer: {request.model.name} critique"),
            )
        )
        findings = _unique([f for part in parts for f in part.findings])
        usage = Spend()
        for part in parts:
            usage = usage.plus(part.usage)
        exhausted = next((p.budget_exhausted for p in parts if p.budget_exhausted), None)
        verdict = verdict_for(findings) if exhausted is None else Verdict.REQUEST_CHANGES
        summary = _summary(verdict, findings, parts, request)
        posted: int = await workflow.execute_activity_method(
            GovernanceActivities.post_review,
            PostReviewRequest(
                repo=request.repo,
                number=request.pull_request.number,
                head_commit=request.head_commit,
                verdict=verdict,
                summary=summary,
                findings=findings,
            ),
            task_queue=GOVERNANCE_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
            retry_policy=_RETRY,
            summary=f"post review: {verdict.value}, {len(findings)} finding(s)",
        )
        return ReviewResult(
            round=request.round,
            head_commit=request.head_commit,
            verdict=verdict,
            findings=findings,
            checks_run=[name for part in parts for name in part.checks_run],
            usage=usage,
            summary=summary,
            comments_posted=posted,
            budget_exhausted=exhausted,
        )


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    unique = []
    for finding in findings:
        if finding.key not in seen:
            seen.add(finding.key)
            unique.append(finding)
    return unique


def _summary(verdict: Verdict, findings: list[Finding], parts: list[ReviewPart], request: ReviewRequest) -> str:
    blocking = [f for f in findings if f.blocking]
    lines = [
        f"Review round {request.round} of {request.head_commit[:10]}: **{verdict.value}**",
        f"Checks: {', '.join(name for part in parts for name in part.checks_run)}",
        f"{len(blocking)} blocking finding(s), {len(findings) - len(blocking)} note(s).",
    ]
    lines += [f"- {f.describe()}" for f in findings[:20]]
    lines += [f"> {part.summary}" for part in parts if part.summary]
    if any(p.budget_exhausted for p in parts):
        lines.append("The LLM review could not run within the ticket's budget.")
    return "\n".join(lines)
