"""The local forge: bare repositories and pull requests as JSON files, safe across processes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from factory.errors import ForgeError
from factory.forge import Forge, LocalForge, ReviewComment

HEAD = "fix/101-header"


def git(*args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(["git", *args], env=env, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def forge(tmp_path: Path) -> LocalForge:
    """A forge with one repository, ``demo``, whose ``main`` has a ticket branch beside it."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# demo\n")
    forge = LocalForge(tmp_path / "forge")
    forge.seed_repo("demo", source)
    for branch in (HEAD, "feature/2-other"):
        git("--git-dir", forge.clone_url("demo"), "branch", branch, "main")
    return forge


def test_local_forge_speaks_the_forge_protocol(forge: LocalForge) -> None:
    """LocalForge satisfies the Forge protocol that activities depend on."""
    assert isinstance(forge, Forge)
    assert forge.name == "local"
    assert forge.repo_exists("demo")
    assert not forge.repo_exists("other")
    assert not forge.repo_exists("../demo")


def test_opening_twice_returns_the_same_pull_request(forge: LocalForge) -> None:
    """open_pull_request is find-or-create: the second call finds the first PR and says it did not create one."""
    first, created = forge.open_pull_request("demo", HEAD, "main", "Fix header", "Body")
    assert created is True
    assert first.number == 1
    assert first.state == "open"
    assert first.repo == "demo"
    assert first.url == (forge.root / "demo.prs" / "1.json").as_uri()
    assert Path(first.url.removeprefix("file://")).is_file()
    again, created = forge.open_pull_request("demo", HEAD, "main", "Another title", "Other body")
    assert created is False
    assert again == first
    assert forge.find_pull_request("demo", HEAD) == first
    other, created = forge.open_pull_request("demo", "feature/2-other", "main", "Other", "")
    assert created is True
    assert other.number == 2


def _open_in_child(root: str, barrier: Barrier, results: Any) -> None:
    forge = LocalForge(Path(root))
    barrier.wait()
    pr, created = forge.open_pull_request("demo", HEAD, "main", f"from {os.getpid()}", "")
    results.put((pr.number, created))


def test_concurrent_opens_from_eight_processes_create_exactly_one_pull_request(forge: LocalForge) -> None:
    """Eight processes released at once to open the same PR produce one PR, created by exactly one of them."""
    # fork keeps the test fast (no re-import per child); spawn is the fallback where fork is missing.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    barrier = ctx.Barrier(8)
    results = ctx.Queue()
    workers = [ctx.Process(target=_open_in_child, args=(str(forge.root), barrier, results)) for _ in range(8)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(outcomes) == [(1, False)] * 7 + [(1, True)]
    assert [pr.number for pr in forge.list_pull_requests("demo")] == [1]


def test_comments_persist_across_forge_instances(forge: LocalForge) -> None:
    """Comments, including line comments, are stored in the PR file and read back by a fresh LocalForge."""
    pr, _ = forge.open_pull_request("demo", HEAD, "main", "Fix", "")
    forge.add_comment("demo", pr.number, "Looks good")
    forge.add_comment("demo", pr.number, "Off by one here", author="reviewer", path="src/app.py", line=12)
    reread = LocalForge(forge.root).get_pull_request("demo", pr.number)
    assert [(c.author, c.body, c.path, c.line) for c in reread.comments] == [
        ("factory", "Looks good", None, None),
        ("reviewer", "Off by one here", "src/app.py", 12),
    ]
    assert reread.updated_at >= reread.created_at


def test_update_and_list_filter_by_state(forge: LocalForge) -> None:
    """A closed PR no longer blocks a new one for the same head, and cannot be reopened beside it."""
    first, _ = forge.open_pull_request("demo", HEAD, "main", "Fix", "")
    closed = forge.update_pull_request("demo", first.number, state="closed", title="Fix (superseded)")
    assert (closed.state, closed.title) == ("closed", "Fix (superseded)")
    second, created = forge.open_pull_request("demo", HEAD, "main", "Fix again", "")
    assert created is True
    assert second.number == 2
    with pytest.raises(ForgeError, match="already open"):
        forge.update_pull_request("demo", first.number, state="open")
    assert [pr.number for pr in forge.list_pull_requests(state="open")] == [2]
    assert [pr.number for pr in forge.list_pull_requests("demo", state="closed")] == [1]
    with pytest.raises(ForgeError, match="unknown pull request state"):
        forge.update_pull_request("demo", second.number, state="approved")


def test_unknown_repository_error_names_the_repositories_that_exist(forge: LocalForge) -> None:
    """Asking for a repository the forge does not have says which ones it does have."""
    with pytest.raises(ForgeError, match=r"no repository 'nope' \(repositories: demo\)"):
        forge.open_pull_request("nope", HEAD, "main", "t", "b")
    with pytest.raises(ForgeError, match="no repository"):
        forge.list_pull_requests("nope")
    with pytest.raises(ForgeError, match="no pull request #7"):
        forge.get_pull_request("demo", 7)


def test_a_pull_request_needs_both_branches_to_exist(forge: LocalForge) -> None:
    """Like GitHub, a PR for a branch that was never pushed is refused rather than recorded."""
    with pytest.raises(ForgeError, match="'never-pushed' does not exist"):
        forge.open_pull_request("demo", "never-pushed", "main", "t", "b")
    assert forge.list_pull_requests("demo") == []


def test_a_review_posts_each_finding_once_per_commit(forge: LocalForge) -> None:
    """Reviewing the same commit again (a retried activity) posts no comment twice and keeps one verdict per
    commit; the same finding on a new commit is posted again, for that commit."""
    pr, _ = forge.open_pull_request("demo", HEAD, "main", "title", "body")
    finding = ReviewComment(key="k1", body="[error] a.py:3 (ruff): F401", path="a.py", line=3)
    other = ReviewComment(key="k2", body="[warning] (tests): no test", path=None, line=None)

    first = forge.submit_review(
        "demo", pr.number, commit="a" * 40, verdict="request_changes", body="s", comments=[finding]
    )
    again = forge.submit_review(
        "demo", pr.number, commit="a" * 40, verdict="request_changes", body="s", comments=[finding, other]
    )
    later = forge.submit_review("demo", pr.number, commit="b" * 40, verdict="approve", body="ok", comments=[finding])

    assert (first.posted, again.posted, again.already_posted, later.posted) == (1, 1, 1, 1)
    stored = forge.get_pull_request("demo", pr.number)
    assert [(c.commit, c.key) for c in stored.comments] == [("a" * 40, "k1"), ("a" * 40, "k2"), ("b" * 40, "k1")]
    assert [(r.commit, r.verdict) for r in stored.reviews] == [("a" * 40, "request_changes"), ("b" * 40, "approve")]
