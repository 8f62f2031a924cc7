"""Forges: where branches are pushed and pull requests opened (local files or GitHub).

``gitops`` holds the host-side git that talks to any forge; the protocol is in
``base`` and each backend in its own module.
"""

from factory.forge.base import Forge, PullRequest, PullRequestComment, Review, ReviewComment, ReviewOutcome
from factory.forge.local import LocalForge

__all__ = ["Forge", "LocalForge", "PullRequest", "PullRequestComment", "Review", "ReviewComment", "ReviewOutcome"]
