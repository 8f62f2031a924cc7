"""Forges: where branches are pushed and pull requests opened (local files or GitHub).

``gitops`` holds the host-side git that talks to any forge; the protocol is in
``base`` and each backend in its own module.
"""

from typing import TYPE_CHECKING

from factory.forge.base import Forge, PullRequest, PullRequestComment, Review, ReviewComment, ReviewOutcome
from factory.forge.local import LocalForge

if TYPE_CHECKING:
    from factory.config import Settings

__all__ = [
    "Forge",
    "LocalForge",
    "PullRequest",
    "PullRequestComment",
    "Review",
    "ReviewComment",
    "ReviewOutcome",
    "forge_for",
]


def forge_for(settings: "Settings") -> Forge:
    """The configured forge: the local one under the factory's home, or GitHub."""
    if settings.forge.kind == "github":
        from factory.errors import ConfigError
        from factory.forge.github import GitHubForge

        if not settings.forge.owner:
            raise ConfigError('forge.owner: GitHub needs the owner of the repositories ([forge] owner = "acme")')
        token = settings.forge.token.get_secret_value() if settings.forge.token else None
        return GitHubForge(settings.forge.api_url, settings.forge.owner, token)
    return LocalForge(settings.forge_root)
