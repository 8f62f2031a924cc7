"""The GitHub forge against a fake GitHub: a real HTTP server on 127.0.0.1 with in-memory pull requests."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from factory.errors import ForgeError, ForgeRequestRefused
from factory.forge import Forge, ReviewComment
from factory.forge.github import GitHubForge

OWNER = "acme"
REPO = "demo"
TOKEN = "ghp_s3cret-token-value"
HEAD = "fix/101-header"
COMMIT = "a" * 40
STAMP = "2024-05-01T12:00:00Z"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    """In-memory state of one GitHub owner, plus switches that make it misbehave."""

    repos: set[str] = field(default_factory=lambda: {REPO})
    prs: dict[int, dict[str, Any]] = field(default_factory=dict)
    issue_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    review_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_with: list[int] = field(default_factory=list)  # statuses answered to the next requests, one each
    race_on_create: bool = False  # POST /pulls creates the PR but answers 422 "already exists"
    own_pull_request: bool = False  # APPROVE / REQUEST_CHANGES answer 422, like on one's own PR
    page_size: int = 100
    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_pr(self, head: str, base: str = "main", **extra: Any) -> dict[str, Any]:
        number = len(self.prs) + 1
        pr = {
            "number": number,
            "head": {"ref": head, "label": f"{OWNER}:{head}"},
            "base": {"ref": base},
            "title": f"PR {number}",
            "body": None,
            "state": "open",
            "merged_at": None,
            "html_url": f"https://github.com/{OWNER}/{REPO}/pull/{number}",
            "created_at": STAMP,
            "updated_at": STAMP,
            **extra,
        }
        self.prs[number] = pr
        return pr

    def of(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _send(self, status: int, payload: Any, link: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if link:
            self.send_header("Link", link)
        self.end_headers()
        self.wfile.write(data)

    def _page(self, items: list[dict[str, Any]], query: dict[str, list[str]], path: str) -> None:
        fake = self.server.fake
        per_page = min(int(query.get("per_page", ["30"])[0]), fake.page_size)
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page : page * per_page]
        link = None
        if page * per_page < len(items):
            params = {k: v[0] for k, v in query.items()} | {"page": str(page + 1), "per_page": str(per_page)}
            link = f'<{fake.base_url}{path}?{urlencode(params)}>; rel="next"'
        self._send(200, chunk, link)

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        with fake.lock:
            fake.requests.append(Recorded(method, parts.path, query, dict(self.headers.items()), body))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"message": "Bad credentials"})
            if fake.fail_with:
                return self._send(fake.fail_with.pop(0), {"message": "Server Error"})
            self._route(method, parts.path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> None:
        fake = self.server.fake
        match = re.fullmatch(rf"/repos/{OWNER}/([^/]+)(/.*)?", path)
        if match is None or match.group(1) not in fake.repos:
            return self._send(404, {"message": "Not Found"})
        rest = match.group(2) or ""
        if rest == "" and method == "GET":
            return self._send(200, {"name": match.group(1)})
        if rest == "/pulls" and method == "GET":
            state = query.get("state", ["open"])[0]
            head = query.get("head", [None])[0]
            found = [
                pr
                for pr in fake.prs.values()
                if (state == "all" or pr["state"] == state) and (head is None or pr["head"]["label"] == head)
            ]
            return self._page(found, query, path)
        if rest == "/pulls" and method == "POST":
            label = f"{OWNER}:{body['head']}"
            if body["head"] == body["base"]:
                return self._send(
                    422, {"message": "Validation Failed", "errors": [{"message": "No commits between main and main"}]}
                )
            if any(pr["state"] == "open" and pr["head"]["label"] == label for pr in fake.prs.values()):
                return self._send(422, _already_exists(label))
            pr = fake.add_pr(body["head"], body["base"], title=body["title"], body=body["body"])
            if fake.race_on_create:
                return self._send(422, _already_exists(label))
            return self._send(201, pr)
        number_match = re.fullmatch(r"/(pulls|issues)/(\d+)(/.*)?", rest)
        if number_match is None or int(number_match.group(2)) not in fake.prs:
            return self._send(404, {"message": "Not Found"})
        kind, number, tail = number_match.group(1), int(number_match.group(2)), number_match.group(3) or ""
        pr = fake.prs[number]
        if (kind, tail, method) == ("pulls", "", "GET"):
            return self._send(200, pr)
        if (kind, tail, method) == ("pulls", "", "PATCH"):
            pr.update(body)
            pr["updated_at"] = "2024-05-02T00:00:00Z"
            return self._send(200, pr)
        if (kind, tail, method) == ("issues", "/comments", "GET"):
            return self._page(fake.issue_comments.get(number, []), query, path)
        if (kind, tail, method) == ("issues", "/comments", "POST"):
            comment = {"user": {"login": "factory-bot"}, "body": body["body"], "created_at": STAMP}
            fake.issue_comments.setdefault(number, []).append(comment)
            return self._send(201, comment)
        if (kind, tail, method) == ("pulls", "/comments", "GET"):
            return self._page(fake.review_comments.get(number, []), query, path)
        if (kind, tail, method) == ("pulls", "/reviews", "GET"):
            return self._page(fake.reviews.get(number, []), query, path)
        if (kind, tail, method) == ("pulls", "/reviews", "POST"):
            if fake.own_pull_request and body["event"] != "COMMENT":
                return self._send(
                    422,
                    {"message": "Unprocessable Entity", "errors": ["Can not approve your own pull request"]},
                )
            states = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
            review = {
                "user": {"login": "factory-bot"},
                "body": body["body"],
                "state": states[body["event"]],
                "commit_id": body["commit_id"],
                "submitted_at": STAMP,
            }
            fake.reviews.setdefault(number, []).append(review)
            for comment in body.get("comments", []):
                fake.review_comments.setdefault(number, []).append(
                    {**comment, "user": {"login": "factory-bot"}, "commit_id": body["commit_id"], "created_at": STAMP}
                )
            return self._send(200, review)
        return self._send(404, {"message": "Not Found"})


def _already_exists(label: str) -> dict[str, Any]:
    return {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequest", "code": "custom", "message": f"A pull request already exists for {label}."}
        ],
    }


class Server(ThreadingHTTPServer):
    fake: FakeGitHub


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    server = Server(("127.0.0.1", 0), Handler)
    server.fake = FakeGitHub(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def forge(github: FakeGitHub) -> Iterator[GitHubForge]:
    with GitHubForge(github.base_url, OWNER, TOKEN, timeout_s=5) as forge:
        yield forge


def test_speaks_the_forge_protocol_with_github_headers(forge: GitHubForge, github: FakeGitHub) -> None:
    """It is a Forge named "github" and every request carries GitHub's Accept, API version and bearer token."""
    assert isinstance(forge, Forge)
    assert forge.name == "github"
    assert forge.repo_exists(REPO)
    headers = github.requests[-1].headers
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert headers["Authorization"] == f"Bearer {TOKEN}"


def test_repo_exists_and_clone_url_follow_repo_names(github: FakeGitHub) -> None:
    """Factory repo names map to GitHub names; a 404 repository does not exist; clone URLs are on the web host."""
    with GitHubForge(github.base_url, OWNER, TOKEN, repo_names={"web": REPO}) as forge:
        assert forge.repo_exists("web")
        assert not forge.repo_exists("nope")
        assert github.requests[0].path == f"/repos/{OWNER}/{REPO}"
    with GitHubForge("https://api.github.com", OWNER, TOKEN, repo_names={"web": REPO}) as forge:
        assert forge.clone_url("web") == f"https://github.com/{OWNER}/{REPO}.git"
        assert TOKEN not in forge.clone_url("web")
    with GitHubForge("https://ghe.example.com/api/v3/", OWNER, None) as forge:
        assert forge.clone_url("x") == f"https://ghe.example.com/{OWNER}/x.git"


def test_open_twice_leaves_one_pull_request(forge: GitHubForge, github: FakeGitHub) -> None:
    """Opening the same head twice finds the first pull request: one POST, one PR, created only the first time."""
    first, created = forge.open_pull_request(REPO, HEAD, "main", "Fix header", "Closes #101")
    again, created_again = forge.open_pull_request(REPO, HEAD, "main", "Fix header", "Closes #101")
    assert (created, created_again) == (True, False)
    assert again.number == first.number == 1
    assert len(github.prs) == 1
    assert len(github.of("POST", rf"/repos/{OWNER}/{REPO}/pulls")) == 1
    find = github.of("GET", rf"/repos/{OWNER}/{REPO}/pulls")[0]
    assert find.query["head"] == [f"{OWNER}:{HEAD}"] and find.query["state"] == ["open"]
    assert (first.head, first.base, first.title, first.body, first.state) == (
        HEAD,
        "main",
        "Fix header",
        "Closes #101",
        "open",
    )
    assert first.repo == REPO


def test_create_racing_a_first_attempt_returns_the_existing_pull_request(
    forge: GitHubForge, github: FakeGitHub
) -> None:
    """When the POST answers 422 "A pull request already exists" (a retry racing its first attempt), the
    existing pull request is found and returned with created=False, and no second one is made."""
    github.race_on_create = True
    pr, created = forge.open_pull_request(REPO, HEAD, "main", "Fix header", "")
    assert created is False
    assert pr.number == 1 and pr.head == HEAD
    assert len(github.prs) == 1


def test_other_validation_failures_are_refused(forge: GitHubForge, github: FakeGitHub) -> None:
    """A 422 other than "already exists", or a 404 repository, is a permanent refusal with GitHub's message."""
    with pytest.raises(ForgeRequestRefused, match="No commits between main and main") as caught:
        forge.open_pull_request(REPO, "main", "main", "t", "b")
    assert caught.value.permanent and not github.prs
    with pytest.raises(ForgeRequestRefused, match="404: Not Found"):
        forge.open_pull_request("missing", HEAD, "main", "t", "b")


def test_server_errors_are_retryable_and_the_call_succeeds_once_github_recovers(
    forge: GitHubForge, github: FakeGitHub
) -> None:
    """A 5xx or 429 is a retryable ForgeError that says so; the same call succeeds after the server recovers."""
    github.fail_with = [502]
    with pytest.raises(ForgeError, match=r"502.*will retry") as caught:
        forge.open_pull_request(REPO, HEAD, "main", "t", "b")
    assert not caught.value.permanent and not isinstance(caught.value, ForgeRequestRefused)
    github.fail_with = [429]
    with pytest.raises(ForgeError, match=r"429.*will retry"):
        forge.open_pull_request(REPO, HEAD, "main", "t", "b")
    pr, created = forge.open_pull_request(REPO, HEAD, "main", "t", "b")
    assert created and len(github.prs) == 1 and pr.number == 1


def test_unreachable_github_is_retryable() -> None:
    """A connection error is a retryable ForgeError, one line, without the token."""
    with (
        GitHubForge("http://127.0.0.1:9", OWNER, TOKEN, timeout_s=2) as forge,
        pytest.raises(ForgeError, match="will retry") as caught,
    ):
        forge.repo_exists(REPO)
    assert not caught.value.permanent
    assert TOKEN not in str(caught.value) and "\n" not in str(caught.value)


def test_bad_credentials_are_refused_without_leaking_the_token(github: FakeGitHub) -> None:
    """A 401 is a permanent ForgeRequestRefused carrying GitHub's message, and the token is never in it."""
    wrong = "ghp_wrong-token-value"
    with (
        GitHubForge(github.base_url, OWNER, wrong) as forge,
        pytest.raises(ForgeRequestRefused, match="401: Bad credentials") as caught,
    ):
        forge.find_pull_request(REPO, HEAD)
    assert caught.value.permanent
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)


def test_submit_review_twice_on_one_commit_posts_nothing_the_second_time(
    forge: GitHubForge, github: FakeGitHub
) -> None:
    """Each comment carries a hidden (commit, key) marker; a second submit on the same commit with the same
    verdict posts no comment and no review, and reports every comment as already posted."""
    github.add_pr(HEAD)
    comments = [
        ReviewComment(key="ruff:E501:app.py:3", body="Line too long", path="app.py", line=3),
        ReviewComment(key="summary", body="Tests are missing"),
    ]
    first = forge.submit_review(REPO, 1, commit=COMMIT, verdict="request_changes", body="Needs work", comments=comments)
    posts_after_first = len([r for r in github.requests if r.method == "POST"])
    second = forge.submit_review(
        REPO, 1, commit=COMMIT, verdict="request_changes", body="Needs work", comments=comments
    )
    assert (first.posted, first.already_posted) == (2, 0)
    assert (second.posted, second.already_posted) == (0, 2)
    assert len([r for r in github.requests if r.method == "POST"]) == posts_after_first
    assert len(github.reviews[1]) == 1 and len(github.issue_comments[1]) == 1
    assert f"<!-- factory-key: {COMMIT}:summary -->" in github.issue_comments[1][0]["body"]
    assert second.review.commit == COMMIT and second.review.verdict == "request_changes"


def test_line_comments_go_in_one_review_on_the_commit(forge: GitHubForge, github: FakeGitHub) -> None:
    """Comments with path and line are posted together in one review with commit_id, event and RIGHT side;
    a new commit posts them again (keys are per commit); a changed verdict posts a new review."""
    github.add_pr(HEAD)
    comments = [
        ReviewComment(key="k1", body="one", path="a.py", line=1),
        ReviewComment(key="k2", body="two", path="b.py", line=7),
    ]
    outcome = forge.submit_review(REPO, 1, commit=COMMIT, verdict="approve", body="Fine", comments=comments)
    posts = github.of("POST", rf"/repos/{OWNER}/{REPO}/pulls/1/reviews")
    assert len(posts) == 1 and outcome.posted == 2
    payload = posts[0].body
    assert payload["commit_id"] == COMMIT and payload["event"] == "APPROVE"
    assert f"<!-- factory-review: {COMMIT} -->" in payload["body"]
    assert [(c["path"], c["line"], c["side"]) for c in payload["comments"]] == [
        ("a.py", 1, "RIGHT"),
        ("b.py", 7, "RIGHT"),
    ]
    assert f"<!-- factory-key: {COMMIT}:k2 -->" in payload["comments"][1]["body"]
    assert not github.of("POST", rf"/repos/{OWNER}/{REPO}/issues/1/comments")

    changed = forge.submit_review(REPO, 1, commit=COMMIT, verdict="request_changes", body="No", comments=comments)
    assert changed.posted == 0 and len(github.reviews[1]) == 2
    assert github.reviews[1][-1]["state"] == "CHANGES_REQUESTED"
    assert github.of("POST", rf"/repos/{OWNER}/{REPO}/pulls/1/reviews")[-1].body["comments"] == []
    newer = forge.submit_review(REPO, 1, commit="b" * 40, verdict="approve", body="Fine", comments=comments)
    assert newer.posted == 2
    reviews = forge.get_pull_request(REPO, 1).reviews
    assert {(r.commit, r.verdict) for r in reviews} == {(COMMIT, "request_changes"), ("b" * 40, "approve")}


def test_review_on_ones_own_pull_request_falls_back_to_a_comment(forge: GitHubForge, github: FakeGitHub) -> None:
    """GitHub refuses APPROVE/REQUEST_CHANGES on one's own pull request (422): the review is posted as a
    COMMENT that states the verdict, and the factory still reads the verdict back."""
    github.add_pr(HEAD)
    github.own_pull_request = True
    outcome = forge.submit_review(REPO, 1, commit=COMMIT, verdict="approve", body="Looks good", comments=[])
    posts = github.of("POST", rf"/repos/{OWNER}/{REPO}/pulls/1/reviews")
    assert [p.body["event"] for p in posts] == ["APPROVE", "COMMENT"]
    assert "Verdict: approve" in posts[1].body["body"]
    assert outcome.review.verdict == "approve"
    assert forge.get_pull_request(REPO, 1).reviews[0].verdict == "approve"


def test_existing_comments_are_read_across_pages(forge: GitHubForge, github: FakeGitHub) -> None:
    """Markers are collected from every page the Link header points to, so a key on page 3 is not reposted."""
    github.add_pr(HEAD)
    github.page_size = 2
    github.issue_comments[1] = [
        {"user": {"login": "someone"}, "body": f"note {i}", "created_at": STAMP} for i in range(4)
    ] + [{"user": {"login": "factory-bot"}, "body": f"old\n\n<!-- factory-key: {COMMIT}:late -->", "created_at": STAMP}]
    outcome = forge.submit_review(
        REPO, 1, commit=COMMIT, verdict="approve", body="ok", comments=[ReviewComment(key="late", body="old")]
    )
    assert (outcome.posted, outcome.already_posted) == (0, 1)
    pages = github.of("GET", rf"/repos/{OWNER}/{REPO}/issues/1/comments")
    assert [p.query.get("page", ["1"])[0] for p in pages] == ["1", "2", "3"]
    assert len(forge.get_pull_request(REPO, 1).comments) == 5


def test_list_get_and_update_map_github_pull_requests(forge: GitHubForge, github: FakeGitHub) -> None:
    """GitHub's open/closed plus merged_at map to open/closed/merged; get fills issue comments; update PATCHes."""
    github.add_pr("a")
    github.add_pr("b", state="closed")
    github.add_pr("c", state="closed", merged_at=STAMP)
    github.issue_comments[1] = [{"user": {"login": "octo"}, "body": "hi", "created_at": STAMP}]
    assert [(pr.head, pr.state) for pr in forge.list_pull_requests(REPO)] == [
        ("a", "open"),
        ("b", "closed"),
        ("c", "merged"),
    ]
    assert [pr.head for pr in forge.list_pull_requests(REPO, "merged")] == ["c"]
    assert [pr.head for pr in forge.list_pull_requests(REPO, "closed")] == ["b"]
    assert [pr.head for pr in forge.list_pull_requests(REPO, "open")] == ["a"]
    with pytest.raises(ForgeRequestRefused, match="unknown pull request state"):
        forge.list_pull_requests(REPO, "draft")

    pr = forge.get_pull_request(REPO, 1)
    assert pr.body == "" and pr.url.endswith("/pull/1") and pr.created_at == STAMP
    assert [(c.author, c.body) for c in pr.comments] == [("octo", "hi")]

    updated = forge.update_pull_request(REPO, 1, title="New", state="closed")
    assert (updated.title, updated.state, updated.updated_at) == ("New", "closed", "2024-05-02T00:00:00Z")
    assert github.of("PATCH", rf"/repos/{OWNER}/{REPO}/pulls/1")[0].body == {"title": "New", "state": "closed"}
    assert forge.find_pull_request(REPO, "a") is None
    with pytest.raises(ForgeRequestRefused, match="open or closed"):
        forge.update_pull_request(REPO, 2, state="merged")
    with pytest.raises(ForgeRequestRefused, match="404"):
        forge.get_pull_request(REPO, 99)


def test_add_comment_names_the_line_in_an_issue_comment(forge: GitHubForge, github: FakeGitHub) -> None:
    """add_comment posts an issue comment; a path and line are named in its text and kept on the result."""
    github.add_pr(HEAD)
    comment = forge.add_comment(REPO, 1, "Why?", path="app.py", line=4)
    assert github.issue_comments[1][0]["body"] == "`app.py:4`: Why?"
    assert (comment.author, comment.path, comment.line) == ("factory-bot", "app.py", 4)
