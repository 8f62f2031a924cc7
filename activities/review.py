"""Governance activities: read a pushed change, check it, post the review, tell the team.

Every check reads the change from the forge itself (a fresh host-side fetch of
``base..head``), so nothing large travels through workflow history and nothing
from a sandbox is trusted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from temporalio import activity

from activities.ticket import boundary, heartbeating, in_thread
from factory.config import Settings
from factory.errors import BudgetExhausted
from factory.forge import ReviewComment, forge_for
from factory.forge.gitops import ChangeSnapshot, read_change
from factory.governance.dependencies import dependencies_from_diff, manifest_kind
from factory.governance.hallucination import PopularNames, check_dependency, findings_from_verdicts
from factory.governance.registry import registry_client
from factory.governance.review import ChangeUnderReview, deterministic_findings, llm_critique
from factory.models import (
    Notification,
    PostReviewRequest,
    PullRequestBodyUpdate,
    ReviewPart,
    ReviewRequest,
    Spend,
)
from factory.notify import send_notification

__all__ = ["GovernanceActivities"]

log = structlog.get_logger()
_MAX_FINDINGS = 60


def _is_manifest(path: str) -> bool:
    return manifest_kind(path) is not None or PurePosixPath(path).name in ("setup.py", "Pipfile")


class GovernanceActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.forge = forge_for(settings)
        self.ruff = str(Path(sys.executable).parent / "ruff")

    def _change(
        self, request: ReviewRequest, also_read: Callable[[str], bool] | None = None
    ) -> tuple[ChangeUnderReview, ChangeSnapshot]:
        policy = request.policy
        documents = [p for p in [policy.style_guide, *policy.architecture_docs] if p]
        snapshot = read_change(
            request.repo.clone_url, request.base_commit, request.head_commit, documents=documents, also_read=also_read
        )
        change = ChangeUnderReview(
            ticket=request.ticket,
            diff=snapshot.diff,
            files_before=snapshot.files_before,
            files_after=snapshot.files_after,
            base_commit=request.base_commit,
            head_commit=request.head_commit,
            head_paths=snapshot.head_paths,
        )
        return change, snapshot

    @activity.defn
    @boundary
    async def review_change(self, request: ReviewRequest) -> ReviewPart:
        """The deterministic checks: lint, docstrings, tests, secrets, protected paths, size."""

        def run() -> ReviewPart:
            change, _ = self._change(request)
            findings, checks = deterministic_findings(
                change,
                protected_paths=request.policy.protected_paths,
                max_diff_lines=request.policy.max_diff_lines,
                ruff_bin=self.ruff,
            )
            return ReviewPart(checks_run=checks, findings=findings[:_MAX_FINDINGS])

        return await in_thread(run)

    @activity.defn
    @boundary
    async def check_dependencies(self, request: ReviewRequest) -> ReviewPart:
        """The Hallucination Check: every added or changed dependency exists, unyanked, unvulnerable."""
        governance = self.settings.governance

        def run() -> ReviewPart:
            change, snapshot = self._change(request, also_read=_is_manifest)
            # Every path of the repository (its own modules are not dependencies), with the
            # manifests' text (what is declared) and the changed files' text.
            files = {path: "" for path in snapshot.head_paths} | snapshot.documents | change.files_after
            refs = dependencies_from_diff(change.diff, files)
            if not refs:
                return ReviewPart(checks_run=["hallucination-check"], summary="no dependency added or changed")
            popular = PopularNames.bundled()
            now = datetime.now(UTC)
            with registry_client(self.settings) as client:
                verdicts = [
                    check_dependency(
                        ref, client, popular=popular, now=now, new_package_days=governance.new_package_days
                    )
                    for ref in refs
                ]
            findings = findings_from_verdicts(verdicts)
            summary = ", ".join(f"{v.name}: {v.status}" for v in verdicts)
            return ReviewPart(checks_run=["hallucination-check"], findings=findings[:_MAX_FINDINGS], summary=summary)

        return await in_thread(run)

    @activity.defn
    @boundary
    async def critique_change(self, request: ReviewRequest) -> ReviewPart:
        """The LLM reviewer, read-only: the diff against the style guide and architecture documents."""
        change, snapshot = await in_thread(self._change, request)
        policy = request.policy
        style = snapshot.documents.get(policy.style_guide) if policy.style_guide else None
        architecture = "\n\n".join(snapshot.documents[p] for p in policy.architecture_docs if p in snapshot.documents)
        try:
            # A model call takes seconds to minutes: heartbeat meanwhile, or the heartbeat timeout
            # fails the activity and a retry pays for the same critique twice.
            findings, usage, summary = await heartbeating(
                llm_critique(
                    request.model,
                    request.caps,
                    request.spent,
                    change,
                    style_guide=style,
                    architecture=architecture or None,
                ),
                f"waiting for {request.model.name}",
            )
        except BudgetExhausted as exc:
            return ReviewPart(checks_run=["llm-review"], usage=Spend(), budget_exhausted=str(exc))
        return ReviewPart(checks_run=["llm-review"], findings=findings[:_MAX_FINDINGS], usage=usage, summary=summary)

    @activity.defn
    @boundary
    async def post_review(self, request: PostReviewRequest) -> int:
        """Post the verdict and one comment per finding; a retry posts nothing twice."""
        comments = [ReviewComment(key=f.key, body=f.describe(), path=f.path, line=f.line) for f in request.findings]
        outcome = await in_thread(
            self.forge.submit_review,
            request.repo.name,
            request.number,
            commit=request.head_commit,
            verdict=request.verdict.value,
            body=request.summary,
            comments=comments,
        )
        return outcome.posted

    @activity.defn
    @boundary
    async def update_pull_request_body(self, request: PullRequestBodyUpdate) -> None:
        await in_thread(self.forge.update_pull_request, request.repo.name, request.number, body=request.body)

    @activity.defn
    @boundary
    async def notify(self, note: Notification) -> list[str]:
        """Slack and/or Discord; nothing configured is not an error."""
        delivered = await in_thread(send_notification, note, self.settings.notifications)
        log.info("notified", channels=delivered, title=note.title)
        return delivered

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.review_change,
            self.check_dependencies,
            self.critique_change,
            self.post_review,
            self.update_pull_request_body,
            self.notify,
        ]
