"""Turns a validated ticket and the settings into everything its run needs.

Done once, at submission, so that a ticket that cannot run (unknown repo, a model
without a known price, a missing playbook) is refused before any workflow starts,
and so that the run is recorded in workflow history with the settings it used.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from factory.config import Settings
from factory.errors import PlaybookError, UnknownRepo
from factory.llm.pricing import resolve_model_spec
from factory.models import ModelSpec, RepoSpec, ReviewPolicy, Ticket, TicketRun

__all__ = ["SCRIPTED", "playbook_for", "repo_spec", "resolve_ticket_run"]

SCRIPTED = "scripted"


def repo_spec(settings: Settings, name: str) -> RepoSpec:
    if name not in settings.repos:
        known = ", ".join(sorted(settings.repos)) or "none configured"
        raise UnknownRepo(f"unknown repo {name!r} (known: {known}): add a [repos.{name}] table to factory.toml")
    repo = settings.repos[name]
    return RepoSpec(
        name=name,
        clone_url=settings.repo_clone_url(name),
        default_branch=repo.default_branch,
        install_command=repo.install_command,
        test_command=repo.test_command,
        image=repo.image,
        protected_branches=repo.protected_branches
        if repo.protected_branches is not None
        else settings.protected_branches,
        style_guide=repo.style_guide,
        egress_allow=egress_allow_list(settings, name),
    )


def egress_allow_list(settings: Settings, repo_name: str) -> list[str]:
    """The hosts a repo's sandboxes may reach: its own list, or the global one plus its forge's host."""
    repo = settings.repos[repo_name]
    if repo.egress_allow is not None:
        return sorted(set(repo.egress_allow))
    hosts = set(settings.egress_allow)
    forge_host = urlsplit(settings.repo_clone_url(repo_name)).hostname
    if forge_host:
        hosts.add(forge_host)
    return sorted(hosts)


DEFAULT_REVIEW_PLAYBOOK = Path(__file__).parent / "governance" / "data" / "scripted-review.yaml"


def playbook_for(settings: Settings, ticket_id: str) -> Path:
    """``<playbooks_dir>/<ID>.yaml``; a reviewer (``<ID>.review``) without one gets the no-opinion default."""
    for suffix in (".yaml", ".yml", ".json"):
        path = settings.models.playbooks_dir / f"{ticket_id}{suffix}"
        if path.exists():
            return path
    if ticket_id.endswith(".review"):
        return DEFAULT_REVIEW_PLAYBOOK
    raise PlaybookError(
        f"the offline scripted model has no playbook for ticket {ticket_id} in {settings.models.playbooks_dir}: "
        'add one, or configure a real model ([models] coder = "provider/model")'
    )


def _model_for(settings: Settings, name: str, playbook_name: str, cost_capped: bool) -> ModelSpec:
    playbook = None
    if name == SCRIPTED or name.startswith(SCRIPTED + "/"):
        playbook = playbook_for(settings, playbook_name)
        name = f"{SCRIPTED}/{playbook_name}"
    return resolve_model_spec(name, settings, playbook=playbook, cost_capped=cost_capped)


def review_policy(settings: Settings, repo_name: str, ticket: Ticket) -> ReviewPolicy:
    repo = settings.repos[repo_name]
    governance = settings.governance
    return ReviewPolicy(
        protected_paths=repo.protected_paths if repo.protected_paths is not None else governance.protected_paths,
        max_diff_lines=governance.max_diff_lines.get(ticket.type, 300),
        style_guide=repo.style_guide,
        architecture_docs=repo.architecture_docs,
    )


def resolve_ticket_run(
    ticket: Ticket, settings: Settings, *, model: str | None = None, reviewer: str | None = None
) -> TicketRun:
    """Everything a ticket's run needs; the scripted model reads ``<ID>.yaml`` (and ``<ID>.review.yaml``)."""
    repo = repo_spec(settings, ticket.context.repo)
    caps = settings.caps_for(repo.name, ticket.type)
    capped = caps.cost_usd is not None
    spec = _model_for(settings, model or settings.models.coder, ticket.id, capped)
    limits = settings.limits.model_copy(deep=True)
    limits.sandbox.egress_allow = repo.egress_allow
    run = TicketRun(ticket=ticket, repo=repo, model=spec, caps=caps, limits=limits)
    governance = settings.governance
    if governance.enabled:
        run.reviewer = _model_for(settings, reviewer or settings.models.reviewer, f"{ticket.id}.review", capped)
        run.review = review_policy(settings, repo.name, ticket)
        run.max_review_rounds = governance.max_review_rounds
        run.await_comments_s = int(governance.await_comments_hours * 3600)
    return run
