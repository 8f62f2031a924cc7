"""Preparing the embedded demo: model choice, Docker, the local forge, the example tickets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from factory.config import Settings
from factory.errors import ConfigError
from factory.forge.gitops import create_bare_repo_from_dir
from factory.llm.pricing import missing_credentials
from factory.models import TicketRun, parse_ticket
from factory.runs import SCRIPTED, resolve_ticket_run
from factory.sandbox import DockerSandboxes

__all__ = ["DemoPlan", "choose_model", "prepare_demo", "seed_local_forge"]


@dataclass
class DemoPlan:
    model: str
    banner: str
    runs: list[TicketRun] = field(default_factory=list)


def choose_model(settings: Settings) -> tuple[str, str]:
    """The coder model for the demo, and the first line the demo prints about it."""
    coder = settings.models.coder
    if coder == SCRIPTED or coder.startswith(SCRIPTED + "/"):
        return SCRIPTED, (
            'Model: OFFLINE SCRIPTED MODEL (coder = "scripted") — replays the playbooks in '
            f"{settings.models.playbooks_dir}; no LLM is called"
        )
    missing = missing_credentials(coder)
    if missing:
        return SCRIPTED, (
            f"Model: OFFLINE SCRIPTED MODEL — no key set for {coder} ({', '.join(missing)} missing); "
            "replays the example playbooks, no LLM is called"
        )
    return coder, f"Model: {coder} (real model, billed by its provider within the configured budget)"


def seed_local_forge(settings: Settings) -> list[str]:
    """Create the repos that have a ``seed_from`` directory on the local forge, if missing."""
    seeded = []
    for name, repo in settings.repos.items():
        if repo.seed_from is None or repo.clone_url is not None:
            continue
        source = Path(repo.seed_from)
        if not source.is_dir():
            raise ConfigError(f"repos.{name}.seed_from: {source} is not a directory")
        bare = settings.forge_root / f"{name}.git"
        if not bare.exists():
            create_bare_repo_from_dir(source, bare, repo.default_branch)
            seeded.append(name)
    return seeded


def prepare_demo(settings: Settings, tickets_dir: Path, echo: Callable[[str], None]) -> DemoPlan:
    model, banner = choose_model(settings)
    echo(banner)
    tickets = sorted(tickets_dir.glob("*.json"))
    if not tickets:
        raise ConfigError(f"no example tickets (*.json) in {tickets_dir}")
    sandboxes = DockerSandboxes(settings.workspaces_root)
    for name in {parse_ticket(path.read_text()).context.repo for path in tickets}:
        if name in settings.repos:
            sandboxes.check_image(settings.repos[name].image)
    for name in seed_local_forge(settings):
        echo(f"local forge: created repo {name} at {settings.forge_root / (name + '.git')}")
    plan = DemoPlan(model=model, banner=banner)
    for path in tickets:
        ticket = parse_ticket(path.read_text())
        reviewer = SCRIPTED if model == SCRIPTED else None
        plan.runs.append(resolve_ticket_run(ticket, settings, model=model, reviewer=reviewer))
    return plan
