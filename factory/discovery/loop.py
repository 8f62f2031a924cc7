"""The discovery loop's steps, as plain functions the activities call.

Each source looks at one repo and returns a :class:`ProblemBatch`; filing a batch
records every problem in the tracker by fingerprint, so a problem found again
updates its ticket instead of opening a second one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from factory.config import Settings
from factory.discovery.coverage import coverage_command, coverage_problems, parse_coverage
from factory.discovery.deps import audit_dependencies, read_manifests
from factory.discovery.logs import mine_problems, read_events
from factory.errors import RegistryUnreachable
from factory.forge.gitops import clone_for_reading
from factory.governance.registry import registry_client
from factory.models import (
    DiscoveryPlan,
    DiscoveryRecord,
    DiscoveryRequest,
    DiscoverySource,
    DiscoveryTarget,
    ProblemBatch,
)
from factory.runs import repo_spec
from factory.trackers import Tracker
from factory.untrusted import read_untrusted_text

__all__ = [
    "COVERAGE_REPORT",
    "audit_repo_dependencies",
    "file_batch",
    "mine_repo_logs",
    "plan_discovery",
    "read_coverage_report",
]

COVERAGE_REPORT = "coverage.json"
"""Where the coverage command leaves its report, under the sandbox's ``out/``."""

_MAX_REPORT_BYTES = 50 * 1024 * 1024


def plan_discovery(settings: Settings, request: DiscoveryRequest) -> DiscoveryPlan:
    """Resolve the repos and sources of a run; an unknown repo fails the whole run before anything starts."""
    names = request.repos or sorted(settings.repos)
    sources = request.only or settings.discovery.sources
    targets = []
    for name in names:
        spec = repo_spec(settings, name)  # UnknownRepo names the repo and what to do
        repo = settings.repos[name]
        wanted = [source for source in DiscoverySource if source in sources]
        if DiscoverySource.LOGS in wanted and not repo.log_sources and not request.only:
            wanted.remove(DiscoverySource.LOGS)  # nothing configured to mine; only an explicit --only logs says so
        targets.append(
            DiscoveryTarget(
                repo=spec,
                sources=wanted,
                log_sources=list(repo.log_sources),
                coverage_command=coverage_command(spec.test_command, f"/out/{COVERAGE_REPORT}"),
                limits=settings.limits,
            )
        )
    return DiscoveryPlan(targets=targets)


def mine_repo_logs(settings: Settings, target: DiscoveryTarget, now: datetime) -> ProblemBatch:
    """Read the repo's exported errors and turn each recurring group into a bug ticket."""
    batch = ProblemBatch(repo=target.repo.name, source=DiscoverySource.LOGS)
    if not target.log_sources:
        name = target.repo.name
        batch.warnings.append(f"{name}: no log_sources for the Log Miner (add log_sources to [repos.{name}])")
        return batch
    events = []
    for source in target.log_sources:
        path = Path(source)
        if not path.exists():
            batch.warnings.append(f"{target.repo.name}: log source {source} does not exist; skipped")
            continue
        events.extend(read_events(path))
    batch.examined = len(events)
    with tempfile.TemporaryDirectory(prefix="factory-discovery-") as scratch:
        tree = Path(scratch) / "repo"
        clone_for_reading(target.repo.clone_url, tree, target.repo.default_branch)
        files = {
            str(path.relative_to(tree))
            for path in tree.rglob("*")
            if path.is_file() and not path.is_symlink() and ".git" not in path.relative_to(tree).parts
        }
    batch.problems = mine_problems(events, repo=target.repo.name, config=settings.log_miner, now=now, repo_files=files)
    return batch


def audit_repo_dependencies(settings: Settings, target: DiscoveryTarget) -> ProblemBatch:
    """Read the repo's manifests from a host-side clone (nothing in it runs) and ask the registries about each."""
    batch = ProblemBatch(repo=target.repo.name, source=DiscoverySource.DEPS)
    with tempfile.TemporaryDirectory(prefix="factory-discovery-") as scratch:
        tree = Path(scratch) / "repo"
        clone_for_reading(target.repo.clone_url, tree, target.repo.default_branch)
        declared = read_manifests(tree)
    with registry_client(settings) as client:
        try:
            result = audit_dependencies(declared, client, repo=target.repo.name, config=settings.watchdog)
        except RegistryUnreachable as exc:
            batch.warnings.append(f"{target.repo.name}: {exc}; no dependency tickets from this run")
            return batch
    batch.problems = list(result.problems)
    batch.warnings = list(result.warnings)
    batch.examined = result.checked
    return batch


def read_coverage_report(
    settings: Settings, target: DiscoveryTarget, out_dir: Path, recently_changed: dict[str, int] | None = None
) -> ProblemBatch:
    """Read the report the coverage run left in the sandbox's ``out/`` and rank its modules.

    The file was written by the sandbox, so it is opened without following links and
    size-checked before it is parsed.
    """
    batch = ProblemBatch(repo=target.repo.name, source=DiscoverySource.COVERAGE)
    text = read_untrusted_text(out_dir / COVERAGE_REPORT, _MAX_REPORT_BYTES)
    if text is None:
        batch.warnings.append(f"{target.repo.name}: the coverage run left no {COVERAGE_REPORT}; no coverage tickets")
        return batch
    try:
        modules = parse_coverage(text, None)
    except (ValueError, KeyError, TypeError) as exc:
        batch.warnings.append(f"{target.repo.name}: the coverage report is unreadable ({exc}); no coverage tickets")
        return batch
    batch.examined = len(modules)
    batch.problems = coverage_problems(
        modules, repo=target.repo.name, config=settings.coverage, recently_changed=recently_changed
    )
    return batch


def file_batch(tracker: Tracker, batch: ProblemBatch, key: str) -> list[DiscoveryRecord]:
    """Record every problem of the batch; ``key`` (the run) makes a repeated call change nothing."""
    return [tracker.record(problem, f"{key}:{problem.ticket.fingerprint}") for problem in batch.problems]


def describe(records: Sequence[DiscoveryRecord]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.action.value] = counts.get(record.action.value, 0) + 1
    return ", ".join(f"{count} {action}" for action, count in sorted(counts.items())) or "nothing new"
