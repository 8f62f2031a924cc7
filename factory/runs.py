"""Turns a validated ticket and the settings into everything its run needs.

Done once, at submission, so that a ticket that cannot run (unknown repo, a model
without a known price, a missing playbook) is refused before any workflow starts,
and so that the run is recorded in workflow history with the settings it used.
"""

from __future__ import annotations

from pathlib import Path

from factory.config import Settings
from factory.errors import PlaybookError, UnknownRepo
from factory.llm.pricing import resolve_model_spec
from factory.models import RepoSpec, Ticket, TicketRun

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
    )


def playbook_for(settings: Settings, ticket_id: str) -> Path:
    for suffix in (".yaml", ".yml", ".json"):
        path = settings.models.playbooks_dir / f"{ticket_id}{suffix}"
        if path.exists():
            return path
    raise PlaybookError(
        f"the offline scripted model has no playbook for ticket {ticket_id} in {settings.models.playbooks_dir}: "
        'add one, or configure a real model ([models] coder = "provider/model")'
    )


def resolve_ticket_run(ticket: Ticket, settings: Settings, *, model: str | None = None) -> TicketRun:
    repo = repo_spec(settings, ticket.context.repo)
    caps = settings.caps_for(repo.name, ticket.type)
    name = model or settings.models.coder
    playbook = None
    if name == SCRIPTED or name.startswith(SCRIPTED + "/"):
        playbook = playbook_for(settings, ticket.id)
        name = f"{SCRIPTED}/{ticket.id}"
    spec = resolve_model_spec(name, settings, playbook=playbook, cost_capped=caps.cost_usd is not None)
    return TicketRun(ticket=ticket, repo=repo, model=spec, caps=caps, limits=settings.limits)
