"""Host-side git, safe against hostile repositories.

A sandboxed agent controls everything inside its repository: ``.git/config``,
hooks, refs, even which files are symlinks. Git executes code from a repository's
configuration (``core.fsmonitor``, ``core.sshCommand``, hooks, ...), so the host
never runs git *inside* a repository the sandbox has touched. The only
repositories the host runs git in are

* fresh clones it made itself before the sandbox ever saw them
  (``clone_for_sandbox``), and
* fresh bare repositories it creates for verification
  (``verify_bundle_and_push``) or for seeding the local forge.

Commits leave a sandbox only as a git bundle, a plain file. The host copies it,
checks it in a clean repository and pushes from there.

Every git process gets a hardened environment: no system or global
configuration, no terminal prompts, an empty ``HOME``, hooks and fsmonitor off,
an explicit ``--git-dir`` (never repository discovery), and arguments that come
from outside behind ``--`` or validated first.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from factory.errors import BundleRejected, GitError, ProtectedBranchRefused, RemoteBranchConflict

__all__ = [
    "MAX_FILE_BYTES",
    "clone_for_reading",
    "clone_for_sandbox",
    "create_bare_repo_from_dir",
    "ensure_branch_pushable",
    "remote_branch_sha",
    "verify_bundle_and_push",
]

MAX_FILE_BYTES = 10 * 1024 * 1024
"""No file in a pushed commit may be larger than this (10 MiB)."""

MAX_SYMLINK_TARGET_BYTES = 4096

NETWORK_TIMEOUT_S = 600.0
LOCAL_TIMEOUT_S = 120.0

# Passed as ``-c`` to every git process. Command-line configuration beats any
# repository configuration, so even a mistake that pointed git at a hostile
# repository would not run its hooks or fsmonitor. ``safe.directory`` and
# ``protocol.file.allow`` are only honoured from protected (command-line) scope.
_HARDENING: tuple[str, ...] = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.sshCommand=ssh -o BatchMode=yes",  # never wait for a prompt; GIT_SSH_COMMAND still wins
    "protocol.file.allow=always",
    "safe.directory=*",
    "credential.helper=",
    "gc.auto=0",
    "maintenance.auto=false",
    "fetch.recurseSubmodules=false",
    "submodule.recurse=false",
    "init.defaultBranch=main",
    "advice.detachedHead=false",
)

# The few variables the host's own git transport needs (ssh agent, proxies, CA
# certificates). Everything else, notably GIT_DIR, GIT_CONFIG_* and GIT_ASKPASS,
# is dropped so the caller's environment cannot change what git does.
_PASSTHROUGH_ENV = (
    "PATH",
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "GIT_SSH",
    "GIT_SSL_CAINFO",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)

_OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_CREDENTIALS_IN_URL = re.compile(r"(://)[^/@\s]+@")
# Characters HFS+ ignores in file names, so ".g\u200cit" is ".git" there.
_HFS_IGNORABLE = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, *range(0x206A, 0x2070), 0xFEFF]
)
# Symlinks with these names are refused by git's own fsck: they redirect files git reads.
_NO_SYMLINK_NAMES = frozenset({".gitmodules", ".gitattributes", ".gitignore", ".mailmap"})
_SEED_EXCLUDES = ("__pycache__/", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/")
_SEED_AUTHOR = ("Software Factory", "factory@localhost")
# A fixed date makes seeding reproducible: the same directory gives the same commit everywhere.
_SEED_DATE = "2024-01-01T00:00:00+0000"


def _decode(output: bytes) -> str:
    return output.decode("utf-8", "replace").strip()


def _redact(text: str) -> str:
    """Drop ``user:token@`` from any URL so credentials never reach a message or log."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


def _stderr_tail(stderr: bytes, lines: int = 3, limit: int = 400) -> str:
    kept = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    tail = " | ".join(kept[-lines:]) or "(no output)"
    tail = _redact(tail)
    return tail if len(tail) <= limit else "..." + tail[-limit:]


@dataclass(frozen=True)
class _GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class _Git:
    """Runs git with the hardened environment; one instance per operation, with its own empty HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        env = {name: os.environ[name] for name in _PASSTHROUGH_ENV if name in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_ATTR_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0",
                # git runs from the empty HOME; the ceiling stops it looking above for a repository.
                "GIT_CEILING_DIRECTORIES": str(home.parent),
                "LC_ALL": "C",
            }
        )
        self.env = env

    def run_unchecked(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = LOCAL_TIMEOUT_S,
    ) -> _GitResult:
        argv = ["git"]
        for item in _HARDENING:
            argv += ["-c", item]
        if git_dir is not None:
            argv.append(f"--git-dir={git_dir}")
        if work_tree is not None:
            argv.append(f"--work-tree={work_tree}")
        argv += list(args)
        try:
            proc = subprocess.run(
                argv,
                cwd=self.home,
                env={**self.env, **(env or {})},
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed on this host (no 'git' on PATH)") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {timeout:.0f}s") from None
        return _GitResult(proc.returncode, proc.stdout, proc.stderr)

    def run(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = LOCAL_TIMEOUT_S,
        error: type[GitError] = GitError,
        what: str | None = None,
    ) -> bytes:
        """Run git and return its stdout; a failure raises ``error`` with git's stderr tail."""
        result = self.run_unchecked(args, git_dir=git_dir, work_tree=work_tree, stdin=stdin, env=env, timeout=timeout)
        if result.returncode != 0:
            label = what or f"git {args[0]}"
            raise error(f"{label} failed (exit {result.returncode}): {_stderr_tail(result.stderr)}")
        return result.stdout

    def is_ancestor(self, git_dir: Path, ancestor: str, descendant: str) -> bool:
        result = self.run_unchecked(["merge-base", "--is-ancestor", ancestor, descendant], git_dir=git_dir)
        if result.returncode not in (0, 1):
            raise GitError(f"git merge-base failed (exit {result.returncode}): {_stderr_tail(result.stderr)}")
        return result.returncode == 0


@contextlib.contextmanager
def _git_session() -> Iterator[_Git]:
    with tempfile.TemporaryDirectory(prefix="factory-git-home-") as home:
        yield _Git(Path(home).resolve())


# --------------------------------------------------------------------------
# Branch names


def ensure_branch_pushable(branch: str, protected_branches: Sequence[str]) -> None:
    """Refuse a protected, special or malformed branch name; runs no network command.

    Names are compared case-insensitively, because on a case-insensitive file
    system (a local forge on macOS) ``MAIN`` and ``main`` are the same ref file.
    Patterns use ``fnmatch`` (``release/*``), where ``*`` also crosses ``/``:
    broader than git's own matching, which is the safe direction here.
    """
    if (
        not branch
        or branch != branch.strip()
        or branch == "HEAD"
        or branch.startswith(("refs/", "-"))
        or "@{" in branch
    ):
        raise ProtectedBranchRefused(f"refusing to push to {branch!r}: not a plain branch name")
    folded = branch.casefold()
    for pattern in protected_branches:
        if folded == pattern.casefold() or fnmatch.fnmatchcase(folded, pattern.casefold()):
            raise ProtectedBranchRefused(
                f"refusing to push to protected branch {branch!r} (matches {pattern!r}); "
                "the factory only pushes its own ticket branches"
            )
    with _git_session() as git:
        result = git.run_unchecked(["check-ref-format", "--branch", branch])
    if result.returncode != 0 or result.stdout.decode("utf-8", "replace").strip() != branch:
        raise ProtectedBranchRefused(f"refusing to push to {branch!r}: not a valid git branch name")


def _check_object_id(name: str, value: str) -> None:
    """Object ids reach git's command line; anything but full hex could be read as an option."""
    if not _OBJECT_ID.match(value):
        raise BundleRejected(f"bundle rejected: {name} {value!r} is not a full hexadecimal commit id")


# --------------------------------------------------------------------------
# Remote queries


@dataclass(frozen=True)
class _RemoteState:
    default_ref: str | None
    branch_sha: str | None


def _remote_state(git: _Git, remote_url: str, branch: str) -> _RemoteState:
    ref = f"refs/heads/{branch}"
    out = _decode(
        git.run(
            ["ls-remote", "--symref", "--", remote_url, "HEAD", ref],
            timeout=NETWORK_TIMEOUT_S,
            what=f"git ls-remote {_redact(remote_url)}",
        )
    )
    default_ref: str | None = None
    branch_sha: str | None = None
    for line in out.splitlines():
        left, _, name = line.partition("\t")
        if name == "HEAD" and left.startswith("ref: "):
            default_ref = left.removeprefix("ref: ").strip()
        elif name == ref:
            branch_sha = left.strip()
    return _RemoteState(default_ref, branch_sha)


def remote_branch_sha(remote_url: str, branch: str) -> str | None:
    """The commit ``branch`` points at on the remote, or ``None`` if there is no such branch."""
    with _git_session() as git:
        return _remote_state(git, remote_url, branch).branch_sha


# --------------------------------------------------------------------------
# Cloning for a sandbox


def _clear_directory(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _secrets_of(url: str) -> list[bytes]:
    needles = [url.encode()]
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        needles += [secret.encode() for secret in (parts.password,) if secret]
    return needles


def _ensure_url_absent(git_dir: Path, url: str) -> None:
    """Prove no metadata file kept the clone URL (or its password) before the sandbox sees the repo."""
    needles = _secrets_of(url)
    for dirpath, dirnames, filenames in os.walk(git_dir):
        if Path(dirpath) == git_dir:
            dirnames[:] = [name for name in dirnames if name != "objects"]  # compressed content, not metadata
        for filename in filenames:
            data = (Path(dirpath) / filename).read_bytes()
            if any(needle in data for needle in needles):
                relative = (Path(dirpath) / filename).relative_to(git_dir)
                raise GitError(f"clone left the remote URL in .git/{relative}; refusing to hand it to a sandbox")


def clone_for_sandbox(
    clone_url: str,
    dest: Path,
    branch: str,
    author_name: str = "Software Factory",
    author_email: str = "factory@localhost",
) -> str:
    """Clone ``branch`` into ``dest`` for a sandbox and return the HEAD commit.

    The result has no remote, no reflog and no ``FETCH_HEAD``, so no URL or
    credential is left for the sandbox to find; its own config holds only the
    commit identity the agent uses. Local sources are cloned with ``--no-local``
    so no object file is hard-linked with the forge's repository (a sandbox could
    otherwise corrupt the forge by writing through a shared inode). On failure
    ``dest`` is left as it was found, so a retry starts clean.

    Call it before the sandbox runs anything: the few git commands after the
    clone run in ``dest`` and rely on it being exactly what git just wrote.
    """
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GitError(f"cannot clone into {dest}: it exists and is not an empty directory")
    if branch.startswith("-"):
        raise GitError(f"cannot clone branch {branch!r}: not a branch name")
    created = not dest.exists()
    git_dir = dest / ".git"
    with _git_session() as git:
        try:
            git.run(
                [
                    "clone",
                    "--quiet",
                    "--no-local",
                    "--template=",
                    "--single-branch",
                    f"--branch={branch}",
                    "--",
                    clone_url,
                    str(dest),
                ],
                timeout=NETWORK_TIMEOUT_S,
                what=f"git clone {_redact(clone_url)} ({branch})",
            )
            git.run(["remote", "remove", "origin"], git_dir=git_dir)
            git.run(["config", "--", "user.name", author_name], git_dir=git_dir)
            git.run(["config", "--", "user.email", author_email], git_dir=git_dir)
            # Reflogs record "clone: from <url>".
            shutil.rmtree(git_dir / "logs", ignore_errors=True)
            (git_dir / "FETCH_HEAD").unlink(missing_ok=True)
            head = _decode(git.run(["rev-parse", "--verify", "HEAD^{commit}"], git_dir=git_dir))
            _ensure_url_absent(git_dir, clone_url)
        except BaseException:
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            elif dest.is_dir():
                _clear_directory(dest)
            raise
    return head


def clone_for_reading(clone_url: str, dest: Path, branch: str, *, since_days: int = 90) -> dict[str, int]:
    """Clone ``branch`` into ``dest`` for the host to read (manifests), and count recent commits per file.

    The clone is made as for a sandbox (no hooks, no remote left behind) and nothing
    in it is executed; the counts weigh what changed lately (path -> commits in the
    last ``since_days`` days of the branch's history).
    """
    clone_for_sandbox(clone_url, dest, branch)
    with _git_session() as git:
        log = git.run(
            ["log", f"--since={since_days}.days.ago", "--no-renames", "--name-only", "--format=", "HEAD"],
            git_dir=Path(dest) / ".git",
            what="git log",
        )
    counts: dict[str, int] = {}
    for line in _decode(log).splitlines():
        if line.strip():
            counts[line] = counts.get(line, 0) + 1
    return counts


# --------------------------------------------------------------------------
# Verifying a bundle and pushing it


def _copy_bundle(bundle: Path, target: Path, max_bytes: int) -> None:
    """Copy the sandbox's bundle into host-owned space, refusing anything but a regular file.

    ``O_NOFOLLOW`` refuses a symlink (to a host file), ``O_NONBLOCK`` keeps a FIFO
    from hanging the worker, and working on the copy means the sandbox cannot
    swap the file between verification and fetch.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(bundle, flags)
    except FileNotFoundError:
        raise BundleRejected(f"bundle rejected: {bundle} does not exist") from None
    except OSError as exc:
        raise BundleRejected(f"bundle rejected: cannot open {bundle} ({exc.strerror}); symlinks are refused") from None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleRejected(f"bundle rejected: {bundle} is not a regular file")
        if info.st_size > max_bytes:
            raise BundleRejected(f"bundle rejected: {info.st_size:,} bytes is over the {max_bytes:,} byte limit")
        copied = 0
        with target.open("wb") as sink:
            while chunk := source.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise BundleRejected(f"bundle rejected: grew past the {max_bytes:,} byte limit while copying")
                sink.write(chunk)


def _dotgit_component(component: str) -> bool:
    """True for ``.git`` and the spellings Windows and macOS file systems treat as ``.git``."""
    name = component.translate(_HFS_IGNORABLE).casefold()
    name = name.split(":", 1)[0].rstrip(" .")  # NTFS: ".git::$INDEX_ALLOCATION", ".git. "
    return name in (".git", "git~1")


def _path_problem(path: str) -> str | None:
    for component in path.split("/"):
        if component in ("", ".", ".."):
            return f"has a malformed path {path!r}"
        if _dotgit_component(component):
            return f"touches a .git path {path!r}"
    return None


def _symlink_problem(path: str, target: bytes) -> str | None:
    shown = target.decode("utf-8", "replace")
    if posixpath.basename(path) in _NO_SYMLINK_NAMES:
        return f"makes {path!r} a symlink, which git itself refuses"
    if not target or b"\0" in target:
        return f"adds a symlink {path!r} with an invalid target"
    if target.startswith(b"/"):
        return f"adds a symlink {path!r} -> {shown!r} with an absolute target"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), shown))
    if resolved == ".." or resolved.startswith("../"):
        return f"adds a symlink {path!r} -> {shown!r} that points outside the repository"
    if any(_dotgit_component(part) for part in resolved.split("/")):
        return f"adds a symlink {path!r} -> {shown!r} into .git"
    return None


@dataclass(frozen=True)
class _Change:
    commit: str
    new_mode: str
    new_oid: str
    status: str
    path: str


def _changes(git: _Git, repo: Path, base: str, head: str) -> list[_Change]:
    """Every file change of every commit in base..head, merges against each parent."""
    commits = git.run(["rev-list", f"{base}..{head}"], git_dir=repo)
    if not commits.strip():
        return []
    raw = git.run(
        ["diff-tree", "--stdin", "-r", "-m", "--root", "--no-renames", "--raw", "-z", "--no-abbrev"],
        git_dir=repo,
        stdin=commits,
    )
    changes: list[_Change] = []
    tokens = raw.split(b"\0")
    commit = ""
    index = 0
    while index < len(tokens):
        token = tokens[index].decode("utf-8", "surrogateescape")
        if token.startswith(":") and index + 1 < len(tokens):
            _old_mode, new_mode, _old_oid, new_oid, status = token[1:].split(" ")
            path = tokens[index + 1].decode("utf-8", "surrogateescape")
            changes.append(_Change(commit, new_mode, new_oid, status[:1], path))
            index += 2
            continue
        if token.strip():
            commit = token.strip()
        index += 1
    return changes


def _reject_unsafe_changes(git: _Git, repo: Path, base: str, head: str, max_file_bytes: int) -> None:
    """No commit may touch ``.git``, add an escaping symlink, or add a file over the size limit."""
    changes = _changes(git, repo, base, head)
    for change in changes:
        problem = _path_problem(change.path)
        if problem:
            raise BundleRejected(f"bundle rejected: commit {change.commit[:12]} {problem}")
    written = [c for c in changes if c.status != "D" and c.new_mode != "160000"]  # 160000: submodule commit
    oids = sorted({c.new_oid for c in written})
    if not oids:
        return
    listing = _decode(
        git.run(
            ["cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"],
            git_dir=repo,
            stdin="".join(f"{oid}\n" for oid in oids).encode(),
        )
    )
    sizes: dict[str, int] = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[1] != "blob":
            raise BundleRejected(f"bundle rejected: object {fields[0][:12]} is missing or not a file")
        sizes[fields[0]] = int(fields[2])
    for change in written:
        size = sizes[change.new_oid]
        if size > max_file_bytes:
            raise BundleRejected(
                f"bundle rejected: commit {change.commit[:12]} adds {change.path!r} of {size:,} bytes "
                f"(limit {max_file_bytes:,})"
            )
    for change in written:
        if change.new_mode != "120000":
            continue
        if sizes[change.new_oid] > MAX_SYMLINK_TARGET_BYTES:
            raise BundleRejected(f"bundle rejected: commit {change.commit[:12]} adds an oversized symlink")
        target = git.run(["cat-file", "blob", change.new_oid], git_dir=repo)
        problem = _symlink_problem(change.path, target)
        if problem:
            raise BundleRejected(f"bundle rejected: commit {change.commit[:12]} {problem}")


def verify_bundle_and_push(
    bundle: Path,
    base_commit: str,
    head_commit: str,
    branch: str,
    remote_url: str,
    protected_branches: list[str],
    work_dir: Path,
    max_bundle_bytes: int = 50_000_000,
    max_file_bytes: int = MAX_FILE_BYTES,
    expected_remote_sha: str | None = None,
) -> bool:
    """Verify the commits a sandbox exported and push them to ``branch``; False if already there.

    The branch is judged before anything touches the network. The bundle is
    checked in a fresh bare repository under ``work_dir`` that only the host has
    written to: the base commit comes from the remote, only ``head_commit`` is
    taken from the bundle (its ref names are ignored), ``head_commit`` must
    descend from ``base_commit``, and every commit in between is inspected.

    Pushing is idempotent and race-safe: every push carries a lease on the
    remote value it expects. A non-fast-forward (a new round after review)
    replaces the remote branch only when its tip is not on the default branch,
    i.e. when it was our own earlier push and not merged work.

    ``expected_remote_sha``, when given, is the tip the caller judged earlier (``""``: the
    branch did not exist): if the remote branch is anywhere else now, the push is refused
    with :class:`RemoteBranchConflict`, and the lease names that tip.
    """
    ensure_branch_pushable(branch, protected_branches)
    _check_object_id("base_commit", base_commit)
    _check_object_id("head_commit", head_commit)
    ref = f"refs/heads/{branch}"
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with _git_session() as git:
        remote = _remote_state(git, remote_url, branch)
        if remote.default_ref == ref:
            raise ProtectedBranchRefused(
                f"refusing to push to {branch!r}: it is the remote's default branch, whatever the protected list says"
            )
        if remote.branch_sha == head_commit:
            return False
        if expected_remote_sha is not None and (remote.branch_sha or "") != expected_remote_sha:
            raise RemoteBranchConflict(_moved_message(branch, expected_remote_sha, remote.branch_sha or ""))
        with tempfile.TemporaryDirectory(prefix="verify-", dir=work_dir) as scratch_name:
            scratch = Path(scratch_name)
            incoming = scratch / "incoming.bundle"
            _copy_bundle(Path(bundle), incoming, max_bundle_bytes)
            repo = scratch / "verify.git"
            object_format = "sha256" if len(head_commit) == 64 else "sha1"
            git.run(["init", "--quiet", "--bare", "--template=", f"--object-format={object_format}", str(repo)])

            refspecs = [f"{base_commit}:refs/factory/base"]
            if remote.branch_sha:
                refspecs.append(f"+{ref}:refs/factory/remote-branch")
            if remote.default_ref and remote.default_ref != ref:
                refspecs.append(f"+{remote.default_ref}:refs/factory/default")
            git.run(
                ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", remote_url, *refspecs],
                git_dir=repo,
                timeout=NETWORK_TIMEOUT_S,
                what=f"git fetch {_redact(remote_url)}",
            )

            git.run(
                ["bundle", "verify", "--quiet", str(incoming)],
                git_dir=repo,
                error=BundleRejected,
                what="bundle rejected: git bundle verify",
            )
            git.run(
                ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", str(incoming), f"{head_commit}:{ref}"],
                git_dir=repo,
                error=BundleRejected,
                what=f"bundle rejected: fetching {head_commit[:12]} from the bundle",
            )
            kind = _decode(git.run(["cat-file", "-t", head_commit], git_dir=repo))
            if kind != "commit":
                raise BundleRejected(f"bundle rejected: head_commit {head_commit[:12]} is a {kind}, not a commit")
            if not git.is_ancestor(repo, base_commit, head_commit):
                raise BundleRejected(
                    f"bundle rejected: head_commit {head_commit[:12]} does not descend from base {base_commit[:12]}"
                )
            _reject_unsafe_changes(git, repo, base_commit, head_commit, max_file_bytes)

            # The lease names the tip we inspected (empty: the branch must not exist), so a
            # concurrent push makes ours fail instead of silently replacing it.
            old = ""
            if remote.branch_sha:
                old = _decode(git.run(["rev-parse", "--verify", "refs/factory/remote-branch"], git_dir=repo))
            if old == head_commit:
                return False
            if expected_remote_sha is not None and old != expected_remote_sha:
                raise RemoteBranchConflict(_moved_message(branch, expected_remote_sha, old))
            fast_forward = not old or git.is_ancestor(repo, old, head_commit)
            if not fast_forward and remote.default_ref and git.is_ancestor(repo, old, "refs/factory/default"):
                raise RemoteBranchConflict(
                    f"refusing to overwrite {branch!r}: its tip {old[:12]} is on the default branch "
                    f"{remote.default_ref.removeprefix('refs/heads/')!r}, so it is not the factory's own earlier push"
                )
            lease = f"--force-with-lease={ref}:{old}"
            git.run(
                ["push", "--quiet", "--no-verify", lease, "--", remote_url, f"{head_commit}:{ref}"],
                git_dir=repo,
                timeout=NETWORK_TIMEOUT_S,
                what=f"git push {branch} to {_redact(remote_url)}",
            )
    return True


def _moved_message(branch: str, expected: str, found: str) -> str:
    was = expected[:12] if expected else "absent"
    now = found[:12] if found else "deleted"
    return f"refusing to push {branch!r}: it moved since it was checked (was {was}, now {now})"


# --------------------------------------------------------------------------
# Seeding the local forge


def _is_bare_repo(git: _Git, path: Path) -> bool:
    result = git.run_unchecked(["rev-parse", "--is-bare-repository"], git_dir=path)
    return result.returncode == 0 and result.stdout.strip() == b"true"


def create_bare_repo_from_dir(
    source_dir: Path,
    bare_path: Path,
    default_branch: str = "main",
    message: str = "Initial commit",
) -> str:
    """Create a bare repository holding one commit of ``source_dir``; return that commit.

    Idempotent: an existing repository at ``bare_path`` is left untouched and its
    HEAD commit returned. The repository is built beside ``bare_path`` and
    renamed into place, so concurrent seeders never see (or leave) a half-made
    repository. The author and date are fixed, so seeding the same directory
    gives the same commit on every machine.
    """
    source_dir = Path(source_dir)
    bare_path = Path(bare_path)
    with _git_session() as git:
        if bare_path.exists():
            return _existing_head(git, bare_path)
        if not source_dir.is_dir():
            raise GitError(f"cannot seed {bare_path.name}: {source_dir} is not a directory")
        if (
            default_branch.startswith("-")
            or git.run_unchecked(["check-ref-format", "--branch", default_branch]).returncode
        ):
            raise GitError(f"cannot seed {bare_path.name}: {default_branch!r} is not a valid branch name")
        bare_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{bare_path.name}.seed-", dir=bare_path.parent) as tmp_name:
            tmp = Path(tmp_name)
            staging = tmp / "repo.git"
            work = tmp / "work.git"
            for path in (staging, work):
                git.run(["init", "--quiet", "--bare", "--template=", f"--initial-branch={default_branch}", str(path)])
            (work / "info").mkdir(exist_ok=True)
            (work / "info" / "exclude").write_text("".join(f"{pattern}\n" for pattern in _SEED_EXCLUDES))
            name, email = _SEED_AUTHOR
            identity = {
                "GIT_AUTHOR_NAME": name,
                "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name,
                "GIT_COMMITTER_EMAIL": email,
                "GIT_AUTHOR_DATE": _SEED_DATE,
                "GIT_COMMITTER_DATE": _SEED_DATE,
            }
            git.run(["add", "--all"], git_dir=work, work_tree=source_dir)
            git.run(
                ["commit", "--quiet", "--no-verify", "--allow-empty", "-m", message],
                git_dir=work,
                work_tree=source_dir,
                env=identity,
            )
            commit = _decode(git.run(["rev-parse", "--verify", "HEAD^{commit}"], git_dir=work))
            git.run(
                ["push", "--quiet", "--no-verify", "--", str(staging), f"{commit}:refs/heads/{default_branch}"],
                git_dir=work,
            )
            try:
                os.rename(staging, bare_path)
            except OSError:
                if bare_path.exists():  # another process seeded it first; theirs stands
                    return _existing_head(git, bare_path)
                raise GitError(f"cannot move the seeded repository into {bare_path}") from None
    return commit


def _existing_head(git: _Git, bare_path: Path) -> str:
    if not _is_bare_repo(git, bare_path):
        raise GitError(f"{bare_path} exists but is not a bare git repository")
    return _decode(
        git.run(["rev-parse", "--verify", "HEAD^{commit}"], git_dir=bare_path, what=f"reading HEAD of {bare_path.name}")
    )


# --------------------------------------------------------------------------
# Reading a pushed change (for review)


@dataclass(frozen=True)
class ChangeSnapshot:
    """A change as the forge holds it: the unified diff and the text of each changed file."""

    diff: str
    files_before: dict[str, str]
    files_after: dict[str, str]
    documents: dict[str, str]
    head_paths: list[str]


def _text_at(git: _Git, repo: Path, commit: str, path: str, max_bytes: int) -> str | None:
    result = git.run_unchecked(["cat-file", "blob", f"{commit}:{path}"], git_dir=repo)
    if result.returncode != 0 or len(result.stdout) > max_bytes or b"\0" in result.stdout[:8000]:
        return None
    return result.stdout.decode("utf-8", "replace")


def read_change(
    remote_url: str,
    base_commit: str,
    head_commit: str,
    *,
    documents: Sequence[str] = (),
    also_read: Callable[[str], bool] | None = None,
    max_file_bytes: int = 1_000_000,
) -> ChangeSnapshot:
    """Fetch ``base..head`` from the forge into a fresh repository and read the diff and changed files
    (and the text at head of ``documents`` and of every path ``also_read`` accepts: style guide,
    architecture notes, dependency manifests).

    Like the push, this runs only in a repository the host made itself, with hooks
    and configuration disabled; nothing from a sandbox is involved.
    """
    _check_object_id("base_commit", base_commit)
    _check_object_id("head_commit", head_commit)
    with _git_session() as git, tempfile.TemporaryDirectory(prefix="factory-review-") as scratch:
        repo = Path(scratch) / "review.git"
        object_format = "sha256" if len(head_commit) == 64 else "sha1"
        git.run(["init", "--quiet", "--bare", "--template=", f"--object-format={object_format}", str(repo)])
        git.run(
            [
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--",
                remote_url,
                f"{base_commit}:refs/factory/base",
                f"{head_commit}:refs/factory/head",
            ],
            git_dir=repo,
            timeout=NETWORK_TIMEOUT_S,
            what=f"git fetch {_redact(remote_url)}",
        )
        # Not _decode: stripping would cut a trailing context line that is only a space.
        diff = git.run(["diff", "--no-color", "--no-ext-diff", "-M", base_commit, head_commit], git_dir=repo).decode(
            "utf-8", "replace"
        )
        names = _decode(
            git.run(["diff", "--name-only", "--no-renames", "-z", base_commit, head_commit], git_dir=repo)
        ).split("\0")
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        for path in filter(None, names):
            if (text := _text_at(git, repo, base_commit, path, max_file_bytes)) is not None:
                before[path] = text
            if (text := _text_at(git, repo, head_commit, path, max_file_bytes)) is not None:
                after[path] = text
        tree = _decode(git.run(["ls-tree", "-r", "--name-only", "-z", head_commit], git_dir=repo))
        head_paths = [path for path in tree.split("\0") if path]
        wanted = [*documents, *(p for p in head_paths if also_read is not None and also_read(p))]
        docs = {
            path: text
            for path in dict.fromkeys(wanted)
            if (text := _text_at(git, repo, head_commit, path, max_file_bytes)) is not None
        }
    return ChangeSnapshot(
        diff=diff,
        files_before=before,
        files_after=after,
        documents=docs,
        head_paths=head_paths,
    )
