"""The Forge protocol over GitHub's REST API (v3), with a synchronous httpx client.

``repo`` arguments are the factory's repository names; ``repo_names`` maps them to
GitHub's (by default they are the same), all under one ``owner``.

Retries are Temporal's job, so this module only sorts failures: a timeout, a
connection error, a 5xx or a rate limit is a retryable ``ForgeError``; a request
GitHub refuses on its merits (401, 403, 404, 422) is a permanent
``ForgeRequestRefused``. The token only ever travels in the ``Authorization``
header: it is never logged and never put in a message.

Idempotence lives in the data, because a retried activity may race its first
attempt: ``open_pull_request`` finds before it creates and treats GitHub's
"already exists" as "found"; every comment ``submit_review`` posts carries a
hidden ``<!-- factory-key: <commit>:<key> -->`` marker, and a comment whose
marker is already on the pull request is not posted again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import httpx

from factory.errors import ForgeError, ForgeRequestRefused
from factory.forge.base import (
    PullRequest,
    PullRequestComment,
    PullRequestState,
    Review,
    ReviewComment,
    ReviewOutcome,
)

__all__ = ["GitHubForge"]

_STATES: tuple[str, ...] = get_args(PullRequestState)
_KEY_MARKER = re.compile(r"<!-- factory-key: (?P<commit>[^\s:]+):(?P<key>.+?) -->")
_REVIEW_MARKER = re.compile(r"<!-- factory-review: (?P<commit>\S+) -->")
_VERDICT_MARKER = re.compile(r"<!-- factory-verdict: (?P<verdict>approve|request_changes) -->")
_EVENTS: dict[str, str] = {"approve": "APPROVE", "request_changes": "REQUEST_CHANGES"}
_PER_PAGE = 100


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _key_marker(commit: str, key: str) -> str:
    return f"<!-- factory-key: {commit}:{key} -->"


def _web_url(api_url: str) -> str:
    """``https://api.github.com`` -> ``https://github.com``; ``https://ghe/api/v3`` -> ``https://ghe``."""
    url = api_url.rstrip("/")
    url = url.removesuffix("/api/v3")
    return url.replace("://api.", "://", 1)


def _refusal_text(response: httpx.Response) -> str:
    """GitHub's ``message`` plus the messages of its ``errors`` list, on one line."""
    try:
        data = response.json()
    except ValueError:
        return response.reason_phrase or "no message"
    if not isinstance(data, dict):
        return response.reason_phrase or "no message"
    parts = [str(data.get("message") or response.reason_phrase or "no message")]
    for error in data.get("errors") or []:
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
        elif isinstance(error, str):
            parts.append(error)
    return "; ".join(parts).replace("\n", " ")


class GitHubForge:
    """Pull requests and reviews on GitHub (or GitHub Enterprise) for the repositories of one owner."""

    name = "github"

    def __init__(
        self,
        api_url: str,
        owner: str,
        token: str | None,
        *,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
        repo_names: Mapping[str, str] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.owner = owner
        self.repo_names: dict[str, str] = dict(repo_names or {})
        self._token = token
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.api_url, headers=headers, timeout=timeout_s, transport=transport, follow_redirects=True
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GitHubForge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- http

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One request; a 2xx or a status in ``accept`` is returned, anything else raises."""
        shown = f"{method} {httpx.URL(url).path}"
        try:
            response = self._http.request(method, url, params=params, json=json)
        except httpx.TimeoutException as exc:
            raise ForgeError(
                self._scrub(f"GitHub did not answer {shown} in time ({type(exc).__name__}); will retry")
            ) from None
        except httpx.HTTPError as exc:
            raise ForgeError(
                self._scrub(f"cannot reach GitHub at {self.api_url} for {shown} ({type(exc).__name__}); will retry")
            ) from None
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return response
        text = self._scrub(_refusal_text(response))
        rate_limited = status == 429 or (
            status == 403
            and (response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers)
        )
        if rate_limited or status >= 500:
            raise ForgeError(f"GitHub answered {status} to {shown} ({text}); will retry")
        if 400 <= status < 500:
            raise ForgeRequestRefused(f"GitHub refused {shown} with {status}: {text}")
        raise ForgeError(f"GitHub answered {shown} with unexpected status {status} ({text}); will retry")

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._request(method, url, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ForgeError(f"GitHub answered {method} {url} with a body that is not JSON; will retry") from None

    def _paginate(self, url: str, params: Mapping[str, str | int] | None = None) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following ``Link: <...>; rel="next"`` (on the API host only)."""
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        next_params: Mapping[str, str | int] | None = {"per_page": _PER_PAGE, **(params or {})}
        base = httpx.URL(self.api_url)
        while next_url is not None:
            response = self._request("GET", next_url, params=next_params)
            try:
                page = response.json()
            except ValueError:
                raise ForgeError(f"GitHub answered GET {url} with a body that is not JSON; will retry") from None
            if not isinstance(page, list):
                raise ForgeError(f"GitHub answered GET {url} with something other than a list; will retry")
            items += [item for item in page if isinstance(item, dict)]
            link = response.links.get("next", {}).get("url")
            next_url, next_params = None, None
            if link:
                target = httpx.URL(link)
                if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
                    raise ForgeRequestRefused(f"GitHub's next page for GET {url} points off the API host; refusing")
                next_url = link
        return items

    # ---------------------------------------------------------------- repositories

    def _name(self, repo: str) -> str:
        return self.repo_names.get(repo, repo)

    def _repo_path(self, repo: str) -> str:
        return f"/repos/{self.owner}/{self._name(repo)}"

    def clone_url(self, repo: str) -> str:
        return f"{_web_url(self.api_url)}/{self.owner}/{self._name(repo)}.git"

    def repo_exists(self, repo: str) -> bool:
        response = self._request("GET", self._repo_path(repo), accept=frozenset({404}))
        return response.status_code != 404

    # ---------------------------------------------------------------- mapping

    def _pull_request(self, repo: str, data: Mapping[str, Any]) -> PullRequest:
        state: PullRequestState
        if data.get("state") == "open":
            state = "open"
        elif data.get("merged_at") or data.get("merged"):
            state = "merged"
        else:
            state = "closed"
        return PullRequest(
            number=int(data["number"]),
            head=str(data["head"]["ref"]),
            base=str(data["base"]["ref"]),
            title=str(data.get("title") or ""),
            body=str(data.get("body") or ""),
            state=state,
            url=str(data.get("html_url") or ""),
            created_at=str(data.get("created_at") or ""),
            updated_at=str(data.get("updated_at") or ""),
            repo=repo,
        )

    @staticmethod
    def _comment(data: Mapping[str, Any], *, author: str = "") -> PullRequestComment:
        body = str(data.get("body") or "")
        marker = _KEY_MARKER.search(body)
        line = data.get("line")
        return PullRequestComment(
            author=str((data.get("user") or {}).get("login") or author),
            body=body,
            created_at=str(data.get("created_at") or _now()),
            path=data.get("path"),
            line=int(line) if isinstance(line, int) else None,
            commit=marker.group("commit") if marker else data.get("commit_id"),
            key=marker.group("key") if marker else None,
        )

    @staticmethod
    def _review(data: Mapping[str, Any]) -> Review | None:
        """A review the factory posted (it carries the review marker), else None."""
        body = str(data.get("body") or "")
        marker = _REVIEW_MARKER.search(body)
        if marker is None:
            return None
        verdict_marker = _VERDICT_MARKER.search(body)
        verdict: Literal["approve", "request_changes"]
        if verdict_marker is not None:
            verdict = "approve" if verdict_marker.group("verdict") == "approve" else "request_changes"
        else:
            verdict = "approve" if data.get("state") == "APPROVED" else "request_changes"
        return Review(
            commit=marker.group("commit"),
            verdict=verdict,
            body=body,
            author=str((data.get("user") or {}).get("login") or ""),
            created_at=str(data.get("submitted_at") or _now()),
        )

    def _factory_reviews(self, repo: str, number: int) -> list[Review]:
        """The factory's reviews, the latest per commit (GitHub lists them oldest first)."""
        latest: dict[str, Review] = {}
        for data in self._paginate(f"{self._repo_path(repo)}/pulls/{number}/reviews"):
            review = self._review(data)
            if review is not None:
                latest[review.commit] = review
        return list(latest.values())

    # ---------------------------------------------------------------- pull requests

    def find_pull_request(self, repo: str, head: str) -> PullRequest | None:
        found = self._paginate(f"{self._repo_path(repo)}/pulls", {"state": "open", "head": f"{self.owner}:{head}"})
        for data in found:
            if data.get("head", {}).get("ref") == head:
                return self._pull_request(repo, data)
        return None

    def open_pull_request(self, repo: str, head: str, base: str, title: str, body: str) -> tuple[PullRequest, bool]:
        """Find, else create; GitHub's "already exists" (a retry racing its first attempt) counts as found."""
        existing = self.find_pull_request(repo, head)
        if existing is not None:
            return existing, False
        response = self._request(
            "POST",
            f"{self._repo_path(repo)}/pulls",
            json={"title": title, "head": head, "base": base, "body": body},
            accept=frozenset({422}),
        )
        if response.status_code != 422:
            return self._pull_request(repo, response.json()), True
        text = self._scrub(_refusal_text(response))
        if "already exists" not in text.lower():
            raise ForgeRequestRefused(f"GitHub refused to open a pull request from {head!r} into {base!r}: {text}")
        existing = self.find_pull_request(repo, head)
        if existing is None:
            raise ForgeError(f"GitHub says a pull request for {head!r} exists but does not list it yet; will retry")
        return existing, False

    def get_pull_request(self, repo: str, number: int) -> PullRequest:
        """The pull request with its issue comments and the factory's reviews."""
        path = self._repo_path(repo)
        pr = self._pull_request(repo, self._json("GET", f"{path}/pulls/{number}"))
        comments = [self._comment(data) for data in self._paginate(f"{path}/issues/{number}/comments")]
        return pr.model_copy(update={"comments": comments, "reviews": self._factory_reviews(repo, number)})

    def list_pull_requests(self, repo: str | None = None, state: str | None = None) -> list[PullRequest]:
        """Pull requests of one repository (or of every repository in ``repo_names``), oldest first."""
        if state is not None and state not in _STATES:
            raise ForgeRequestRefused(f"unknown pull request state {state!r} (use one of {', '.join(_STATES)})")
        if repo is None and not self.repo_names:
            raise ForgeRequestRefused("listing pull requests on GitHub needs a repository (or repo_names to span)")
        repos = [repo] if repo is not None else sorted(self.repo_names)
        github_state = {None: "all", "open": "open"}.get(state, "closed")
        found: list[PullRequest] = []
        for name in repos:
            pages = self._paginate(
                f"{self._repo_path(name)}/pulls", {"state": github_state, "sort": "created", "direction": "asc"}
            )
            found += [pr for pr in (self._pull_request(name, d) for d in pages) if state is None or pr.state == state]
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
        if state is not None and state not in ("open", "closed"):
            raise ForgeRequestRefused(f"GitHub can only set a pull request's state to open or closed, not {state!r}")
        changes: dict[str, str] = {}
        if title is not None:
            changes["title"] = title
        if body is not None:
            changes["body"] = body
        if state is not None:
            changes["state"] = state
        path = f"{self._repo_path(repo)}/pulls/{number}"
        data = self._json("PATCH", path, json=changes) if changes else self._json("GET", path)
        return self._pull_request(repo, data)

    def add_comment(
        self,
        repo: str,
        number: int,
        body: str,
        author: str = "factory",
        path: str | None = None,
        line: int | None = None,
    ) -> PullRequestComment:
        """An issue comment; a ``path``/``line`` is named in its text (a line comment needs a commit)."""
        text = body
        if path is not None:
            text = f"`{path}:{line}`: {body}" if line is not None else f"`{path}`: {body}"
        data = self._json("POST", f"{self._repo_path(repo)}/issues/{number}/comments", json={"body": text})
        comment = self._comment(data, author=author)
        return comment.model_copy(update={"path": path, "line": line})

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
        """Post only what is not on the pull request yet, judged by the hidden markers.

        Line comments go in one review on ``commit``; other comments become issue
        comments. A review is posted when there are new line comments or the
        factory has no review with this verdict on this commit yet. GitHub does not
        let an account approve or request changes on its own pull request: then
        the review is posted as a comment that states the verdict.
        """
        path = self._repo_path(repo)
        existing: set[str] = set()
        for data in [
            *self._paginate(f"{path}/pulls/{number}/comments"),
            *self._paginate(f"{path}/issues/{number}/comments"),
        ]:
            existing.update(
                f"{m.group('commit')}:{m.group('key')}" for m in _KEY_MARKER.finditer(data.get("body") or "")
            )
        new: list[ReviewComment] = []
        for comment in comments:
            ident = f"{commit}:{comment.key}"
            if ident not in existing:
                existing.add(ident)
                new.append(comment)
        on_lines = [c for c in new if c.path is not None and c.line is not None]
        general = [c for c in new if c.path is None or c.line is None]

        previous = next((r for r in self._factory_reviews(repo, number) if r.commit == commit), None)
        review: Review
        if on_lines or previous is None or previous.verdict != verdict:
            review = self._post_review(path, number, commit=commit, verdict=verdict, body=body, comments=on_lines)
            review = review.model_copy(update={"author": review.author or author})
        else:
            review = previous
        for comment in general:
            text = comment.body
            if comment.path is not None:
                text = f"`{comment.path}`: {text}"
            self._request(
                "POST",
                f"{path}/issues/{number}/comments",
                json={"body": f"{text}\n\n{_key_marker(commit, comment.key)}"},
            )
        return ReviewOutcome(posted=len(new), already_posted=len(comments) - len(new), review=review)

    def _post_review(
        self,
        path: str,
        number: int,
        *,
        commit: str,
        verdict: Literal["approve", "request_changes"],
        body: str,
        comments: list[ReviewComment],
    ) -> Review:
        markers = f"<!-- factory-review: {commit} -->\n<!-- factory-verdict: {verdict} -->"
        payload: dict[str, Any] = {
            "commit_id": commit,
            "event": _EVENTS[verdict],
            "body": f"{body}\n\n{markers}",
            "comments": [
                {
                    "path": c.path,
                    "line": c.line,
                    "side": "RIGHT",
                    "body": f"{c.body}\n\n{_key_marker(commit, c.key)}",
                }
                for c in comments
            ],
        }
        url = f"{path}/pulls/{number}/reviews"
        response = self._request("POST", url, json=payload, accept=frozenset({422}))
        if response.status_code == 422:
            text = self._scrub(_refusal_text(response))
            if "own pull request" not in text.lower():
                raise ForgeRequestRefused(f"GitHub refused the review of #{number} on {commit[:12]}: {text}")
            shown = "approve" if verdict == "approve" else "request changes"
            payload["event"] = "COMMENT"
            payload["body"] = (
                f"**Verdict: {shown}** (posted as a comment: GitHub does not let an account "
                f"approve or request changes on its own pull request)\n\n{body}\n\n{markers}"
            )
            response = self._request("POST", url, json=payload)
        data = response.json()
        return Review(
            commit=commit,
            verdict=verdict,
            body=str(data.get("body") or payload["body"]),
            author=str((data.get("user") or {}).get("login") or ""),
            created_at=str(data.get("submitted_at") or _now()),
        )
