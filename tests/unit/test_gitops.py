"""Host-side git: cloning for a sandbox, verifying its bundle, pushing; all against real repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from factory.errors import BundleRejected, GitError, ProtectedBranchRefused, RemoteBranchConflict
from factory.forge.gitops import (
    clone_for_sandbox,
    create_bare_repo_from_dir,
    remote_branch_sha,
    verify_bundle_and_push,
)

PROTECTED = ["main", "production", "release/*"]
BRANCH = "fix/101-header"

# The "sandbox side" of these tests runs git too; keep it away from the developer's own configuration.
_ISOLATED = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Agent",
    "GIT_AUTHOR_EMAIL": "agent@sandbox",
    "GIT_COMMITTER_NAME": "Agent",
    "GIT_COMMITTER_EMAIL": "agent@sandbox",
}


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    env = {**os.environ, **_ISOLATED}
    env.pop("GIT_DIR", None)
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout.strip()


def commit_file(work: Path, name: str, content: str = "content\n", message: str | None = None) -> str:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", message or f"add {name}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def make_bundle(work: Path, base: str, rev: str = "HEAD", name: str = "export.bundle") -> Path:
    bundle = work.parent / name
    git("bundle", "create", "-q", str(bundle), f"{base}..{rev}", cwd=work)
    return bundle


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    """A forge-side bare repository seeded from a small project; returns (path, main's commit)."""
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    (source / "README.md").write_text("# demo\n")
    (source / "src" / "app.py").write_text("print('hello')\n")
    bare = tmp_path / "forge" / "demo.git"
    return bare, create_bare_repo_from_dir(source, bare)


@pytest.fixture
def sandbox(tmp_path: Path, remote: tuple[Path, str]) -> Path:
    """A working repository as a sandbox receives it."""
    bare, _ = remote
    work = tmp_path / "workspace" / "repo"
    clone_for_sandbox(str(bare), work, "main")
    return work


def refs_of(bare: Path) -> str:
    return git("--git-dir", str(bare), "for-each-ref", "--format=%(refname) %(objectname)")


# ---------------------------------------------------------------- branch refusal


@pytest.mark.parametrize(
    "branch",
    ["main", "production", "release/1.2", "release/2.0/hotfix", "MAIN", "Production", "HEAD", "refs/heads/x", "-x"],
)
def test_protected_branch_is_refused_before_any_network_call(tmp_path: Path, branch: str) -> None:
    """A protected (or special) branch is refused before git touches the remote: a remote that
    does not exist would otherwise raise a plain GitError, and the work directory is never created."""
    work_dir = tmp_path / "verify"
    with pytest.raises(ProtectedBranchRefused):
        verify_bundle_and_push(
            tmp_path / "missing.bundle",
            "a" * 40,
            "b" * 40,
            branch,
            str(tmp_path / "no-such-remote.git"),
            PROTECTED,
            work_dir,
        )
    assert not work_dir.exists()


@pytest.mark.parametrize("branch", ["", "a..b", "bad name", "x.lock", "feature/", "x@{1}", "a~1", "with:colon"])
def test_invalid_ref_names_are_refused(tmp_path: Path, branch: str) -> None:
    """Names git would not accept as a branch are refused the same way, before any network call."""
    with pytest.raises(ProtectedBranchRefused):
        verify_bundle_and_push(
            tmp_path / "b", "a" * 40, "b" * 40, branch, str(tmp_path / "nope.git"), PROTECTED, tmp_path / "w"
        )


def test_the_remote_default_branch_is_refused_even_when_not_listed(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """Whatever the protected list says, the remote's default branch is never pushed to."""
    bare, base = remote
    head = commit_file(sandbox, "fix.txt")
    with pytest.raises(ProtectedBranchRefused, match="default branch"):
        verify_bundle_and_push(make_bundle(sandbox, base), base, head, "main", str(bare), [], tmp_path / "verify")
    assert git("--git-dir", str(bare), "rev-parse", "main") == base


# ---------------------------------------------------------------- verify and push


def test_a_bundle_with_one_new_commit_is_verified_and_pushed(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """A clone's new commit, exported as a bundle, lands on the remote branch; main is untouched."""
    bare, base = remote
    head = commit_file(sandbox, "src/fix.py", "x = 1\n")
    pushed = verify_bundle_and_push(
        make_bundle(sandbox, base), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "verify"
    )
    assert pushed is True
    assert remote_branch_sha(str(bare), BRANCH) == head
    assert remote_branch_sha(str(bare), "main") == base
    assert list((tmp_path / "verify").iterdir()) == [], "the verification repository is cleaned up"


def test_pushing_the_same_commit_again_returns_false_and_changes_nothing(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """A replayed push is a no-op reported as "already there", even once the bundle is gone."""
    bare, base = remote
    head = commit_file(sandbox, "fix.txt")
    bundle = make_bundle(sandbox, base)
    assert verify_bundle_and_push(bundle, base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v") is True
    before = refs_of(bare)
    assert verify_bundle_and_push(bundle, base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v") is False
    bundle.unlink()
    assert verify_bundle_and_push(bundle, base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v") is False
    assert refs_of(bare) == before


def test_a_new_round_replaces_the_factory_own_earlier_push(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """After review, a rewritten head (not a fast-forward) replaces our earlier push on the branch."""
    bare, base = remote
    first = commit_file(sandbox, "fix.txt", "one\n")
    assert verify_bundle_and_push(make_bundle(sandbox, base), base, first, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    git("commit", "-q", "--amend", "-m", "fix, second round", cwd=sandbox)
    second = git("rev-parse", "HEAD", cwd=sandbox)
    assert verify_bundle_and_push(
        make_bundle(sandbox, base, name="round2.bundle"), base, second, BRANCH, str(bare), PROTECTED, tmp_path / "v"
    )
    assert remote_branch_sha(str(bare), BRANCH) == second


def test_a_branch_whose_tip_is_on_the_default_branch_is_not_overwritten(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """If the remote branch points at work already on main (merged, or not ours), it is not force-pushed."""
    bare, base = remote
    human = tmp_path / "human"
    git("clone", "-q", str(bare), str(human))
    merged = commit_file(human, "merged.txt")
    git("push", "-q", "origin", "HEAD:main", f"HEAD:refs/heads/{BRANCH}", cwd=human)
    head = commit_file(sandbox, "fix.txt")
    with pytest.raises(RemoteBranchConflict, match="default branch"):
        verify_bundle_and_push(make_bundle(sandbox, base), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    assert remote_branch_sha(str(bare), BRANCH) == merged


def test_a_head_that_does_not_descend_from_base_is_rejected(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """An unrelated history (an orphan commit) is rejected and nothing is pushed."""
    bare, base = remote
    git("checkout", "-q", "--orphan", "elsewhere", cwd=sandbox)
    orphan = commit_file(sandbox, "other.txt")
    bundle = sandbox.parent / "orphan.bundle"
    git("bundle", "create", "-q", str(bundle), "elsewhere", cwd=sandbox)
    with pytest.raises(BundleRejected, match="does not descend"):
        verify_bundle_and_push(bundle, base, orphan, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    assert remote_branch_sha(str(bare), BRANCH) is None


def test_a_head_commit_missing_from_the_bundle_is_rejected(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """Only the named head is taken from the bundle; if the bundle does not hold it, nothing is pushed."""
    bare, base = remote
    commit_file(sandbox, "fix.txt")
    bundle = make_bundle(sandbox, base)
    with pytest.raises(BundleRejected):
        verify_bundle_and_push(bundle, base, "c" * 40, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    assert remote_branch_sha(str(bare), BRANCH) is None


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "src/../../escape", ".git/config"])
def test_a_symlink_pointing_outside_the_repository_is_rejected(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path, target: str
) -> None:
    """A commit adding a symlink to /etc/passwd (or escaping with ``..``, or into .git) is rejected."""
    bare, base = remote
    (sandbox / "leak").symlink_to(target)
    git("add", "leak", cwd=sandbox)
    git("commit", "-q", "-m", "add a link", cwd=sandbox)
    head = commit_file(sandbox, "later.txt")  # the bad commit is not the head: every commit is inspected
    with pytest.raises(BundleRejected, match="symlink"):
        verify_bundle_and_push(make_bundle(sandbox, base), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    assert remote_branch_sha(str(bare), BRANCH) is None


def test_a_symlink_inside_the_repository_is_accepted(tmp_path: Path, remote: tuple[Path, str], sandbox: Path) -> None:
    """Relative symlinks that stay inside the repository are ordinary content."""
    bare, base = remote
    (sandbox / "docs").mkdir()
    (sandbox / "docs" / "readme").symlink_to("../README.md")
    git("add", "docs", cwd=sandbox)
    git("commit", "-q", "-m", "link", cwd=sandbox)
    head = git("rev-parse", "HEAD", cwd=sandbox)
    assert verify_bundle_and_push(make_bundle(sandbox, base), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v")


def test_a_commit_touching_a_dot_git_path_is_rejected(tmp_path: Path, remote: tuple[Path, str], sandbox: Path) -> None:
    """A tree with a ``.git`` directory (built with plumbing; porcelain refuses) is rejected."""
    bare, base = remote
    blob = git("hash-object", "-w", "--stdin", cwd=sandbox, stdin="[core]\n\tfsmonitor = evil\n")
    inner = git("mktree", cwd=sandbox, stdin=f"100644 blob {blob}\tconfig\n")
    tree = git("mktree", cwd=sandbox, stdin=f"040000 tree {inner}\t.GIT\n")
    head = git("commit-tree", tree, "-p", base, "-m", "sneaky", cwd=sandbox)
    git("update-ref", "refs/heads/sneaky", head, cwd=sandbox)
    with pytest.raises(BundleRejected, match=r"\.git path"):
        verify_bundle_and_push(
            make_bundle(sandbox, base, "sneaky"), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v"
        )


def test_a_file_over_the_size_limit_is_rejected(tmp_path: Path, remote: tuple[Path, str], sandbox: Path) -> None:
    """A commit adding a file over the per-file limit is rejected (limit lowered to keep the test fast)."""
    bare, base = remote
    head = commit_file(sandbox, "big.bin", "x" * 5000)
    with pytest.raises(BundleRejected, match=r"big\.bin"):
        verify_bundle_and_push(
            make_bundle(sandbox, base), base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v", max_file_bytes=4096
        )


def test_an_oversized_or_symlinked_bundle_is_rejected(tmp_path: Path, remote: tuple[Path, str], sandbox: Path) -> None:
    """The bundle must be a regular file under the size cap; a symlink (say, to a host file) is refused."""
    bare, base = remote
    head = commit_file(sandbox, "fix.txt")
    bundle = make_bundle(sandbox, base)
    with pytest.raises(BundleRejected, match="limit"):
        verify_bundle_and_push(bundle, base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v", max_bundle_bytes=10)
    link = tmp_path / "link.bundle"
    link.symlink_to(bundle)
    with pytest.raises(BundleRejected, match="symlink"):
        verify_bundle_and_push(link, base, head, BRANCH, str(bare), PROTECTED, tmp_path / "v")
    assert remote_branch_sha(str(bare), BRANCH) is None


def test_object_ids_that_could_be_options_are_rejected(tmp_path: Path, remote: tuple[Path, str]) -> None:
    """Commit ids reach git's command line, so only full hexadecimal ids are accepted."""
    bare, base = remote
    with pytest.raises(BundleRejected, match="hexadecimal"):
        verify_bundle_and_push(
            tmp_path / "b", base, "--upload-pack=touch /tmp/x", BRANCH, str(bare), PROTECTED, tmp_path / "v"
        )


def test_hostile_repository_hooks_and_config_never_run_on_the_host(
    tmp_path: Path, remote: tuple[Path, str], sandbox: Path
) -> None:
    """Hooks and config planted in the sandbox's repository (fsmonitor, sshCommand, hooksPath,
    pre-push, post-checkout, reference-transaction) never execute during verify and push, even with
    the bundle and the host's work directory inside that repository. The trap is shown to be armed."""
    bare, base = remote
    head = commit_file(sandbox, "fix.txt")
    bundle = make_bundle(sandbox, base)
    inside = sandbox / ".git" / "export.bundle"
    bundle.rename(inside)

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.sh"
    evil.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\nexit 0\n')
    evil.chmod(0o755)
    for hooks in (sandbox / ".git" / "hooks", tmp_path / "evil-hooks"):
        hooks.mkdir(exist_ok=True)
        for name in ("pre-push", "post-checkout", "reference-transaction", "post-update", "pre-auto-gc", "post-merge"):
            (hooks / name).write_text(evil.read_text())
            (hooks / name).chmod(0o755)
    for key, value in {
        "core.fsmonitor": str(evil),
        "core.sshCommand": str(evil),
        "core.hooksPath": str(tmp_path / "evil-hooks"),
        "core.pager": str(evil),
        "core.askPass": str(evil),
        "uploadpack.packObjectsHook": str(evil),
    }.items():
        git("config", key, value, cwd=sandbox)

    pushed = verify_bundle_and_push(inside, base, head, BRANCH, str(bare), PROTECTED, sandbox / "host-verify")
    assert pushed is True
    assert remote_branch_sha(str(bare), BRANCH) == head
    assert not marker.exists(), f"hostile code ran on the host: {marker.read_text()}"

    git("update-ref", "refs/heads/armed", head, cwd=sandbox)  # plain git in that repository does run it
    assert marker.exists()


# ---------------------------------------------------------------- cloning for a sandbox


def test_a_sandbox_clone_has_no_remote_and_no_trace_of_the_url(tmp_path: Path, remote: tuple[Path, str]) -> None:
    """clone_for_sandbox returns HEAD, removes origin, keeps no URL anywhere in .git, and sets the commit identity."""
    bare, base = remote
    work = tmp_path / "ws" / "repo"
    head = clone_for_sandbox(f"file://{bare}", work, "main", author_name="Bot", author_email="bot@example")
    assert head == base
    assert git("remote", cwd=work) == ""
    assert git("config", "user.name", cwd=work) == "Bot"
    assert git("config", "user.email", cwd=work) == "bot@example"
    assert (work / "src" / "app.py").read_text() == "print('hello')\n"
    for path in (work / ".git").rglob("*"):
        if path.is_file() and "objects" not in path.parts:
            assert str(bare).encode() not in path.read_bytes(), path


def test_clone_refuses_a_non_empty_destination_and_reports_git_errors(tmp_path: Path, remote: tuple[Path, str]) -> None:
    """A non-empty destination is refused; a failed clone says why (git's stderr) and leaves nothing behind."""
    bare, _ = remote
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    with pytest.raises(GitError, match="not an empty directory"):
        clone_for_sandbox(str(bare), busy, "main")
    dest = tmp_path / "fresh"
    with pytest.raises(GitError, match="no-such-branch"):
        clone_for_sandbox(str(bare), dest, "no-such-branch")
    assert not dest.exists()


# ---------------------------------------------------------------- seeding and queries


def test_seeding_is_idempotent_and_skips_caches(tmp_path: Path) -> None:
    """create_bare_repo_from_dir commits the directory without caches, and a second call changes nothing."""
    source = tmp_path / "src"
    (source / "pkg" / "__pycache__").mkdir(parents=True)
    (source / ".pytest_cache").mkdir()
    (source / "pkg" / "mod.py").write_text("A = 1\n")
    (source / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (source / ".pytest_cache" / "README.md").write_text("cache\n")
    bare = tmp_path / "demo.git"
    first = create_bare_repo_from_dir(source, bare, default_branch="trunk")
    assert git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "trunk") == "pkg/mod.py"
    assert git("--git-dir", str(bare), "symbolic-ref", "HEAD") == "refs/heads/trunk"
    (source / "pkg" / "new.py").write_text("B = 2\n")
    assert create_bare_repo_from_dir(source, bare, default_branch="trunk") == first
    assert git("--git-dir", str(bare), "rev-parse", "trunk") == first


def test_remote_branch_sha_reads_existing_and_missing_branches(remote: tuple[Path, str]) -> None:
    """remote_branch_sha gives the tip of a branch, or None when the branch does not exist."""
    bare, base = remote
    assert remote_branch_sha(str(bare), "main") == base
    assert remote_branch_sha(str(bare), "nope") is None
