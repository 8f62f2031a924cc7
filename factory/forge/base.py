"""The Forge protocol: where branches live and pull requests are opened and reviewed.

Two backends speak it: a local forge (bare repositories and JSON files, for the
one-machine default and for tests) and GitHub. Activities depend only on this
protocol, so a ticket run does not care which one is configured.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

__all__ = [
    "Forge",
    "PullRequest",
    "PullRequestComment",
    "PullRequestState",
    "Review",
    "ReviewComment",
    "ReviewOutcome",
]

PullRequestState = Literal["open", "closed", "merged"]


class PullRequestComment(BaseModel):
    """A comment on a pull request; ``path``/``line`` make it a review comment on a line."""

    author: str
    body: str
    created_at: str = Field(description="ISO 8601, UTC.")
    path: str | None = None
    line: int | None = None
    commit: str | None = Field(default=None, description="The commit a review comment was made on.")
    key: str | None = Field(default=None, description="Idempotence key: one comment per (commit, key).")


class ReviewComment(BaseModel):
    """A line comment of a review, with the key that makes posting it idempotent."""

    key: str
    body: str
    path: str | None = None
    line: int | None = None


class Review(BaseModel):
    """A verdict on one commit of a pull request."""

    commit: str
    verdict: Literal["approve", "request_changes"]
    body: str
    author: str
    created_at: str


class ReviewOutcome(BaseModel):
    posted: int = Field(description="Comments posted by this call.")
    already_posted: int = Field(description="Comments skipped because they were posted before on this commit.")
    review: Review


class PullRequest(BaseModel):
    """A pull request as every forge reports it; ``url`` is what a person opens."""

    number: int
    head: str = Field(description="The branch with the changes.")
    base: str = Field(description="The branch the changes are meant for.")
    title: str
    body: str
    state: PullRequestState
    url: str
    created_at: str = Field(description="ISO 8601, UTC.")
    updated_at: str = Field(description="ISO 8601, UTC.")
    comments: list[PullRequestComment] = Field(default_factory=list)
    reviews: list[Review] = Field(default_factory=list)
    repo: str = Field(default="", description="The forge's name for the repository (listings span repositories).")


@runtime_checkable
class Forge(Protocol):
    """Branches and pull requests on one forge; ``repo`` is the forge's own name for a repository."""

    name: str

    def clone_url(self, repo: str) -> str:
        """The URL host-side git clones from and pushes to (never given to a sandbox)."""
        ...

    def repo_exists(self, repo: str) -> bool: ...

    def find_pull_request(self, repo: str, head: str) -> PullRequest | None:
        """The open pull request whose head is ``head``, if any."""
        ...

    def open_pull_request(self, repo: str, head: str, base: str, title: str, body: str) -> tuple[PullRequest, bool]:
        """Find or create the open pull request for ``head``; the flag says whether it was created.

        Must never leave two open pull requests for one head, even when several
        processes call it at once (a retried activity racing its first attempt).
        """
        ...

    def get_pull_request(self, repo: str, number: int) -> PullRequest: ...

    def list_pull_requests(self, repo: str | None = None, state: str | None = None) -> list[PullRequest]: ...

    def update_pull_request(
        self,
        repo: str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
    ) -> PullRequest: ...

    def add_comment(
        self,
        repo: str,
        number: int,
        body: str,
        author: str = "factory",
        path: str | None = None,
        line: int | None = None,
    ) -> PullRequestComment: ...

    def submit_review(
        self,
        repo: str,
        number: int,
        *,
        commit: str,
        verdict: Literal["approve", "request_changes"],
        body: str,
        comments: list[ReviewComment],
        author: str = "factory-reviewer",
    ) -> ReviewOutcome:
        """Post a review on ``commit``; idempotent: a comment whose key was posted on that commit
        is not posted again, and one review per commit is kept (the latest verdict wins)."""
        ...
