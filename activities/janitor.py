"""The Janitor's activities: thin adapters from Temporal to ``factory.janitor`` and the sandbox.

Provisioning, cloning, exporting and pushing reuse ``TicketActivities``; these add
what is the Janitor's own: resolving the run from the settings, the survey of
outdated packages, one update at a time, the Hallucination Check of an update,
the guard on the update branch, and the pull request that is opened or updated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity

from activities.ticket import boundary, in_thread, timed
from factory import janitor
from factory.config import Settings
from factory.errors import UnknownRepo
from factory.forge import forge_for
from factory.forge.gitops import remote_branch_sha
from factory.governance.dependencies import DependencyRef
from factory.governance.hallucination import PopularNames, check_dependency
from factory.governance.registry import registry_client
from factory.models import (
    JanitorBranch,
    JanitorPlan,
    JanitorPublish,
    JanitorRequest,
    JanitorSurvey,
    JanitorSurveyRequest,
    JanitorUpdate,
    JanitorUpdateRequest,
    OutdatedPackage,
    PullRequestRef,
    SandboxHandle,
)
from factory.runs import repo_spec
from factory.sandbox import DockerSandboxes

__all__ = ["JanitorActivities", "sandbox_timeout_s"]

log = structlog.get_logger()
_MANIFEST_TIMEOUT_S = 60


def sandbox_timeout_s(test_timeout_s: int) -> int:
    """The limit of one survey or update script in the sandbox: installing and testing may each take
    the test time limit. The workflow gives those activities this plus two minutes (manifests, logs)."""
    return 2 * test_timeout_s


def write_log(directory: Path, purpose: str, text: str) -> Path:
    """Write ``text`` to ``directory/<purpose as a safe slug>.log``, never through a symlink."""
    path = directory / f"{janitor.log_slug(purpose)}.log"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as handle:
        handle.write(text)
    return path


class JanitorActivities:
    def __init__(self, settings: Settings, sandboxes: DockerSandboxes | None = None) -> None:
        self.settings = settings
        self.sandboxes = sandboxes or DockerSandboxes(settings.workspaces_root)
        self.forge = forge_for(settings)

    # -- resolving the run ------------------------------------------------------------

    @activity.defn
    @boundary
    async def plan_janitor(self, request: JanitorRequest) -> list[JanitorPlan]:
        """One plan per repo (every configured repo when none is named); an unknown repo is refused."""
        settings = self.settings
        names = request.repos or sorted(settings.repos)
        unknown = [name for name in names if name not in settings.repos]
        if unknown:
            known = ", ".join(sorted(settings.repos)) or "none configured"
            raise UnknownRepo(f"unknown repo(s) {', '.join(unknown)} (known: {known})")
        plans = []
        for name in names:
            repo = repo_spec(settings, name)
            limits = settings.limits.model_copy(deep=True)
            limits.sandbox.egress_allow = repo.egress_allow
            plans.append(
                JanitorPlan(
                    repo=repo,
                    limits=limits,
                    branch=settings.janitor.branch,
                    max_packages=settings.janitor.max_packages,
                    pip_index_url=settings.janitor.pip_index_url,
                    npm_registry=settings.janitor.npm_registry,
                    check_dependencies=settings.governance.enabled,
                )
            )
        return plans

    # -- in the sandbox ---------------------------------------------------------------

    def _run(self, sandbox: SandboxHandle, script: str, timeout_s: int, purpose: str) -> tuple[int, str]:
        result = self.sandboxes.exec(sandbox.name, script, timeout_s)
        write_log(
            Path(sandbox.workspace) / "meta" / "logs", purpose, f"{result.output}\n[exit code {result.exit_code}]\n"
        )
        return result.exit_code, result.output

    def _manifests(self, sandbox: SandboxHandle) -> tuple[dict[str, str], set[str]]:
        _, output = self._run(sandbox, janitor.manifest_script(), _MANIFEST_TIMEOUT_S, "janitor-manifests")
        return janitor.parse_manifests(output)

    @activity.defn
    @boundary
    @timed("sandbox")
    async def survey_dependencies(self, request: JanitorSurveyRequest) -> JanitorSurvey:
        """Install the project in the sandbox, check its tests pass as they are, and list what is outdated."""
        plan = request.plan

        def survey() -> JanitorSurvey:
            files, present = self._manifests(request.sandbox)
            kind = janitor.project_kind(files)
            if kind is None:
                return JanitorSurvey(problem="no package.json, requirements.txt or pyproject.toml at the top level")
            stale_locks = sorted(present.intersection(janitor.PYTHON_LOCKS)) if kind == "pypi" else []
            rejected: list[str] = []
            pins = janitor.python_pins(files, rejected) if kind == "pypi" else {}
            script = janitor.survey_script(
                kind,
                pins,
                test_command=plan.repo.test_command,
                pip_index_url=plan.pip_index_url,
                npm_registry=plan.npm_registry,
            )
            timeout_s = sandbox_timeout_s(plan.limits.test_timeout_s)
            code, output = self._run(request.sandbox, script, timeout_s, "janitor-survey")
            problem = janitor.survey_problem(output, code)
            if problem is not None:
                return JanitorSurvey(kind=kind, problem=problem, rejected=rejected)
            listing = janitor.between(output, "outdated")
            if kind == "npm":
                declared = janitor.npm_declared(files.get(janitor.NPM_MANIFEST, ""))
                outdated = janitor.parse_npm_outdated(listing, declared, rejected)
            else:
                outdated = janitor.parse_pip_outdated(listing, pins, rejected)
            for reason in rejected:
                log.warning("janitor_package_rejected", repo=plan.repo.name, reason=reason)
            return JanitorSurvey(kind=kind, outdated=outdated, rejected=rejected, stale_locks=stale_locks)

        return await in_thread(survey)

    @activity.defn
    @boundary
    @timed("sandbox")
    async def try_update(self, request: JanitorUpdateRequest) -> JanitorUpdate:
        """Update one package, run the tests, and commit it or put everything back."""
        plan, package = request.plan, request.package

        def update() -> JanitorUpdate:
            invalid = janitor.package_problem(package.ecosystem, package.name, package.current, package.latest)
            if invalid is not None:
                return JanitorUpdate(package=package, committed=False, reason=invalid)
            files, _ = self._manifests(request.sandbox)
            kind = package.ecosystem
            pins = janitor.python_pins(files) if kind == "pypi" else {}
            manifest = janitor.NPM_MANIFEST if kind == "npm" else (package.manifest or "requirements.txt")
            text = files.get(manifest)
            if text is None:
                return JanitorUpdate(package=package, committed=False, reason=f"{manifest} is gone")
            try:
                if kind == "npm":
                    new_text = janitor.rewrite_npm_pin(text, package.name, package.latest)
                else:
                    new_text = janitor.rewrite_pin(
                        text, package.name, package.current, package.latest, manifest=manifest
                    )
            except ValueError as exc:
                if not janitor.already_committed(files, package):
                    return JanitorUpdate(package=package, committed=False, reason=str(exc))
                new_text = text  # a retry after the commit: the script finds its commit and says so
            after = janitor.python_pins({**files, manifest: new_text}) if kind == "pypi" else {}
            urls = {"pip_index_url": plan.pip_index_url, "npm_registry": plan.npm_registry}
            script = janitor.update_script(
                package,
                manifest=manifest,
                manifest_text=new_text,
                install=janitor.install_command(kind, after, **urls),
                restore=janitor.install_command(kind, pins, **urls),
                test_command=plan.repo.test_command,
            )
            code, output = self._run(
                request.sandbox,
                script,
                sandbox_timeout_s(plan.limits.test_timeout_s),
                f"janitor-update-{package.name}",
            )
            outcome = janitor.parse_update_output(package, output, code)
            log.info(
                "janitor_update",
                package=package.name,
                version=package.latest,
                committed=outcome.committed,
                reason=outcome.reason,
            )
            return outcome

        return await in_thread(update)

    # -- on the host ------------------------------------------------------------------

    @activity.defn
    @boundary
    async def check_update(self, package: OutdatedPackage) -> list[str]:
        """The Hallucination Check of the new version; the reasons it blocks (empty: it passes)."""

        def check() -> list[str]:
            ref = DependencyRef(
                ecosystem=package.ecosystem,
                name=package.name,
                version=package.latest,
                source=f"janitor update from {package.current}",
            )
            with registry_client(self.settings) as client:
                verdict = check_dependency(
                    ref,
                    client,
                    popular=PopularNames.bundled(),
                    now=datetime.now(UTC),
                    new_package_days=self.settings.governance.new_package_days,
                )
            return list(verdict.reasons) if verdict.blocking else []

        return await in_thread(check)

    @activity.defn
    @boundary
    async def branch_problem(self, plan: JanitorPlan) -> JanitorBranch:
        """The update branch's tip, and why it must not be replaced (None: it may be).

        The Janitor replaces its branch on every run, which is only right while the
        branch holds nothing but its own commits: the tip must be the one it recorded
        in its pull request, or already merged into the default branch. The push then
        leases on exactly this tip, so a push made after this judgement is never overwritten.
        """

        def judge() -> JanitorBranch:
            tip = remote_branch_sha(plan.repo.clone_url, plan.branch)
            return JanitorBranch(tip=tip, problem=problem(tip))

        def problem(tip: str | None) -> str | None:
            if tip is None:
                return None
            recorded = {
                head
                for pr in self.forge.list_pull_requests(plan.repo.name)
                if pr.head == plan.branch and (head := janitor.janitor_head(pr.body)) is not None
            }
            if tip in recorded:
                return None
            default_tip = remote_branch_sha(plan.repo.clone_url, plan.repo.default_branch)
            if default_tip == tip:
                return None
            return (
                f"branch {plan.branch!r} has commits the Janitor did not push (tip {tip[:12]}): "
                "left alone; merge or delete it and the next run updates it again"
            )

        return await in_thread(judge)

    @activity.defn
    @boundary
    async def publish_pull_request(self, request: JanitorPublish) -> PullRequestRef:
        """Open the update branch's pull request, or bring the open one up to date (title and body)."""
        plan = request.plan
        committed = sum(1 for update in request.updates if update.committed)
        title = f"chore: update {committed} dependenc{'y' if committed == 1 else 'ies'} of {plan.repo.name}"
        body = janitor.pull_request_body(
            plan.repo.name,
            request.updates,
            request.head_commit,
            plan.repo.test_command,
            plan.check_dependencies,
            request.stale_locks,
        )

        def publish() -> PullRequestRef:
            name = plan.repo.name
            pr, created = self.forge.open_pull_request(name, plan.branch, plan.repo.default_branch, title, body)
            if not created and (pr.body != body or pr.title != title):
                pr = self.forge.update_pull_request(name, pr.number, title=title, body=body)
            return PullRequestRef(number=pr.number, url=pr.url, head=pr.head, created=created)

        return await in_thread(publish)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.plan_janitor,
            self.survey_dependencies,
            self.try_update,
            self.check_update,
            self.branch_problem,
            self.publish_pull_request,
        ]
