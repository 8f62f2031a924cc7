"""A forge made of files: bare repositories and pull requests as JSON.

It gives the one-machine default (and every test) a real git remote and real
pull requests without a network. Several workers may share one root, so every
change to a repository's pull requests happens under an exclusive ``flock`` on
``<repo>.prs/.lock`` and every file is replaced atomically; readers never lock
and never see a half-written file.

Layout under ``root``::

    <repo>.git/            bare repository (clone URL)
    <repo>.prs/.lock       lock file
    <repo>.prs/<n>.json    pull request number n
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from pydantic import ValidationError

from factory.errors import ForgeError, GitError
from factory.forge.base import (
    PullRequest,
    PullRequestComment,
    PullRequestState,
    Review,
    ReviewComment,
    ReviewOutcome,
)
from factory.forge.gitops import create_bare_repo_from_dir, remote_branch_sha

__all__ = ["LocalForge"]

# One name or "owner/name"; no "..", no absolute path, nothing that escapes root.
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PR_FILE = re.compile(r"^([1-9][0-9]*)\.json$")
_STATES: tuple[str, ...] = get_args(PullRequestState)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalForge:
    """The Forge protocol over a directory; safe for several processes at once."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    # ---------------------------------------------------------------- repositories

    def _repo_path(self, repo: str) -> Path:
        if not _REPO_NAME.match(repo) or repo.endswith(".git") or ".." in repo:
            raise ForgeError(f"invalid repository name {repo!r} for the local forge")
        return self.root / f"{repo}.git"

    def repos(self) -> list[str]:
        """Names of the repositories under root, sorted."""
        if not self.root.is_dir():
            return []
        found = [path for path in self.root.glob("*.git") if path.is_dir()]
        found += [path for path in self.root.glob("*/*.git") if path.is_dir()]
        return sorted(str(path.relative_to(self.root)).removesuffix(".git") for path in found)

    def repo_exists(self, repo: str) -> bool:
        try:
            return self._repo_path(repo).is_dir()
        except ForgeError:
            return False

    def _require_repo(self, repo: str) -> Path:
        path = self._repo_path(repo)
        if not path.is_dir():
            known = ", ".join(self.repos()) or "none"
            raise ForgeError(f"the local forge at {self.root} has no repository {repo!r} (repositories: {known})")
        return path

    def clone_url(self, repo: str) -> str:
        return str(self._repo_path(repo))

    def seed_repo(self, repo: str, source_dir: Path, default_branch: str = "main") -> str:
        """Create ``repo`` from a directory (idempotent); return its default branch head."""
        return create_bare_repo_from_dir(source_dir, self._repo_path(repo), default_branch)

    # ---------------------------------------------------------------- storage

    def _prs_dir(self, repo: str) -> Path:
        self._require_repo(repo)
        return self.root / f"{repo}.prs"

    @contextlib.contextmanager
    def _locked(self, repo: str) -> Iterator[Path]:
        """Hold the repository's pull-request lock: across processes, one writer at a time."""
        prs = self._prs_dir(repo)
        prs.mkdir(parents=True, exist_ok=True)
        with (prs / ".lock").open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield prs
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _url(self, repo: str, number: int) -> str:
        return (self.root / f"{repo}.prs" / f"{number}.json").as_uri()

    def _numbers(self, prs: Path) -> list[int]:
        if not prs.is_dir():
            return []
        return sorted(int(match.group(1)) for path in prs.iterdir() if (match := _PR_FILE.match(path.name)))

    def _read(self, repo: str, prs: Path, number: int) -> PullRequest:
        path = prs / f"{number}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ForgeError(f"repository {repo!r} has no pull request #{number}") from None
        try:
            return PullRequest.model_validate_json(text)
        except ValidationError as exc:
            raise ForgeError(f"pull request file {path} is corrupt: {exc.errors()[0]['msg']}") from None

    def _write(self, prs: Path, pr: PullRequest) -> None:
        """Write to a temporary file and rename: readers see the old or the new file, never half of one."""
        fd, tmp = tempfile.mkstemp(prefix=f".{pr.number}.", suffix=".tmp", dir=prs)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(pr.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, prs / f"{pr.number}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _all(self, repo: str, prs: Path) -> list[PullRequest]:
        return [self._read(repo, prs, number) for number in self._numbers(prs)]

    @staticmethod
    def _open_for(prs: list[PullRequest], head: str) -> PullRequest | None:
        return next((pr for pr in prs if pr.state == "open" and pr.head == head), None)

    # ---------------------------------------------------------------- pull requests

    def find_pull_request(self, repo: str, head: str) -> PullRequest | None:
        prs = self._prs_dir(repo)
        return self._open_for(self._all(repo, prs), head)

    def open_pull_request(self, repo: str, head: str, base: str, title: str, body: str) -> tuple[PullRequest, bool]:
        """Find or create, under the lock, so racing callers agree on one pull request.

        Like GitHub, both branches must exist in the repository: a pull request
        for a branch that was never pushed is a bug upstream, not a new PR.
        """
        url = self.clone_url(repo)
        with self._locked(repo) as prs:
            existing = self._open_for(self._all(repo, prs), head)
            if existing is not None:
                return existing, False
            if head == base:
                raise ForgeError(f"cannot open a pull request from {head!r} into itself")
            for branch in (head, base):
                try:
                    sha = remote_branch_sha(url, branch)
                except GitError as exc:
                    raise ForgeError(f"cannot read branches of {repo!r}: {exc}") from None
                if sha is None:
                    raise ForgeError(f"cannot open a pull request in {repo!r}: branch {branch!r} does not exist")
            number = max(self._numbers(prs), default=0) + 1
            now = _now()
            pr = PullRequest(
                number=number,
                head=head,
                base=base,
                title=title,
                body=body,
                state="open",
                url=self._url(repo, number),
                created_at=now,
                updated_at=now,
                repo=repo,
            )
            self._write(prs, pr)
            return pr, True

    def get_pull_request(self, repo: str, number: int) -> PullRequest:
        return self._read(repo, self._prs_dir(repo), number)

    def list_pull_requests(self, repo: str | None = None, state: str | None = None) -> list[PullRequest]:
        """Pull requests of one repository (or all), oldest first; ``state`` filters."""
        if state is not None and state not in _STATES:
            raise ForgeError(f"unknown pull request state {state!r} (use one of {', '.join(_STATES)})")
        repos = [repo] if repo is not None else self.repos()
        found: list[PullRequest] = []
        for name in repos:
            found += [pr for pr in self._all(name, self._prs_dir(name)) if state is None or pr.state == state]
        return found

    def update_pull_request(
        self,
        repo: str,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
    ) -> PullRequest:
        if state is not None and state not in _STATES:
            raise ForgeError(f"unknown pull request state {state!r} (use one of {', '.join(_STATES)})")
        with self._locked(repo) as prs:
            pr = self._read(repo, prs, number)
            if state == "open" and pr.state != "open":
                other = self._open_for(self._all(repo, prs), pr.head)
                if other is not None:
                    raise ForgeError(f"cannot reopen #{number}: #{other.number} is already open for branch {pr.head!r}")
            changes: dict[str, str] = {"updated_at": _now()}
            if title is not None:
                changes["title"] = title
            if body is not None:
                changes["body"] = body
            if state is not None:
                changes["state"] = state
            updated = pr.model_copy(update=changes)
            self._write(prs, updated)
            return updated

    def add_comment(
        self,
        repo: str,
        number: int,
        body: str,
        author: str = "factory",
        path: str | None = None,
        line: int | None = None,
    ) -> PullRequestComment:
        with self._locked(repo) as prs:
            pr = self._read(repo, prs, number)
            comment = PullRequestComment(author=author, body=body, created_at=_now(), path=path, line=line)
            updated = pr.model_copy(update={"comments": [*pr.comments, comment], "updated_at": comment.created_at})
            self._write(prs, updated)
            return comment

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
        with self._locked(repo) as prs:
            pr = self._read(repo, prs, number)
            now = _now()
            posted_keys = {(c.commit, c.key) for c in pr.comments if c.key is not None}
            new = [
                PullRequestComment(
                    author=author, body=c.body, created_at=now, path=c.path, line=c.line, commit=commit, key=c.key
                )
                for c in comments
                if (commit, c.key) not in posted_keys
            ]
            review = Review(commit=commit, verdict=verdict, body=body, author=author, created_at=now)
            reviews = [r for r in pr.reviews if r.commit != commit] + [review]
            updated = pr.model_copy(update={"comments": [*pr.comments, *new], "reviews": reviews, "updated_at": now})
            self._write(prs, updated)
            return ReviewOutcome(posted=len(new), already_posted=len(comments) - len(new), review=review)
