"""The Dependency Watchdog: what a repo depends on, and which of it is vulnerable, yanked, deprecated or stale.

:func:`read_manifests` reads a checked-out tree (never running anything from it):
``pyproject.toml`` (PEP 621 dependencies and extras, PEP 735 groups, uv dev
dependencies, Poetry tables), ``requirements*.txt``/``.in``, ``package.json``, and the
versions the lock files pin (``uv.lock``, ``poetry.lock``, ``package-lock.json``).

:func:`audit_dependencies` asks the registries about each package through the
Hallucination Check's :class:`~factory.governance.registry.RegistryClient`: PyPI's
JSON API (advisories of the pinned release, yanked releases, the Inactive classifier,
the latest version) and the npm registry (packuments: ``deprecated``, ``dist-tags``;
the bulk advisory endpoint that ``npm audit`` uses). Each package with a problem gives
one ``chore`` ticket naming the advisory ids and the safe version. A package whose
look-up fails gets a warning and no ticket: nothing is guessed from old answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from factory.config import WatchdogConfig
from factory.errors import PackageNameInvalid, RegistryUnreachable
from factory.governance.dependencies import (
    _npm_entry,
    _requirements_line,
    manifest_kind,
    parse_requirement,
)
from factory.governance.registry import (
    NpmAdvisory,
    NpmPackage,
    PypiProject,
    RegistryClient,
    Vulnerability,
    canonical_pypi_name,
)
from factory.models import READY_LABEL, DiscoveredProblem, Priority, Ticket, TicketContext, TicketType
from factory.untrusted import FileRefused, read_untrusted_text

__all__ = [
    "SOURCE",
    "AuditResult",
    "DeclaredDependency",
    "audit_dependencies",
    "dependency_fingerprint",
    "npm_range_matches",
    "pep440_key",
    "read_manifests",
    "semver_key",
]

SOURCE = "dependency-watchdog"
Ecosystem = Literal["pypi", "npm"]

# Folders never searched for manifests: installed packages, caches, build output.
_SKIPPED_DIRS = frozenset(
    {".git", "node_modules", ".venv", "venv", "env", ".tox", ".nox", "__pycache__", "site-packages",
     ".mypy_cache", ".ruff_cache", ".pytest_cache", "dist", "build", ".factory"}
)  # fmt: skip
_MAX_DEPTH = 4
_MAX_FILE_BYTES = 20 * 1024 * 1024
_LOCK_FILES = ("uv.lock", "poetry.lock", "package-lock.json")
# Extras and groups that are for developing the project, not for running it.
_DEV_GROUPS = frozenset({"dev", "develop", "development", "test", "tests", "testing", "lint", "docs", "doc", "typing"})
_DEV_FILE = re.compile(r"(?:^|[-_.])(?:dev|test|tests|testing|lint|docs?|ci)(?:[-_.]|$)")
_POETRY_PIN = re.compile(r"^(?:==)?\s*(\d+(?:\.\d+)*[A-Za-z0-9.+!_-]*)$")


class DeclaredDependency(BaseModel):
    """One dependency as a manifest declares it, or as a lock file pins it."""

    model_config = ConfigDict(frozen=True)

    ecosystem: Ecosystem
    name: str
    version: str | None = Field(default=None, description="The exact version pinned or locked, if any.")
    constraint: str = Field(default="", description="What the manifest asks for: '>=2.0', '^4.17.0'.")
    manifest: str = Field(description="Repository-relative path of the file.")
    section: str = Field(default="", description="'project.dependencies', 'devDependencies', 'lock', ...")
    dev: bool = False
    direct: bool = Field(default=True, description="False: only a lock file names it (a transitive dependency).")

    @property
    def key(self) -> tuple[Ecosystem, str]:
        return (self.ecosystem, canonical_pypi_name(self.name) if self.ecosystem == "pypi" else self.name)


class AuditResult(BaseModel):
    problems: list[DiscoveredProblem] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    checked: int = Field(default=0, description="Packages the registries answered for.")


# ================================================================ manifests


def read_manifests(repo_dir: Path) -> list[DeclaredDependency]:
    """Every dependency the manifests and lock files under ``repo_dir`` declare, in a stable order.

    Symbolic links are not followed, installed trees (``node_modules``, virtualenvs)
    are not searched, and a file that does not parse is skipped.
    """
    found: list[DeclaredDependency] = []
    for path in _manifest_files(repo_dir):
        relative = path.relative_to(repo_dir).as_posix()
        text = _read_text(path)
        if text is None:
            continue
        try:
            found.extend(_parse_file(relative, text))
        except (ValueError, TypeError, AttributeError):
            continue  # malformed TOML/JSON or an odd shape: not a manifest we can read
    return found


def _manifest_files(root: Path) -> Iterator[Path]:
    for current, dirs, files in os.walk(root, followlinks=False):
        depth = len(Path(current).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and depth < _MAX_DEPTH)
        for name in sorted(files):
            relative = (Path(current) / name).relative_to(root).as_posix()
            if name in _LOCK_FILES or manifest_kind(relative) in ("pyproject", "requirements", "package.json"):
                yield Path(current) / name


def _read_text(path: Path) -> str | None:
    try:
        return read_untrusted_text(path, _MAX_FILE_BYTES)
    except FileRefused:
        return None  # a link, a FIFO or an oversized file is not a manifest worth reading


def _parse_file(relative: str, text: str) -> list[DeclaredDependency]:
    name = relative.rsplit("/", 1)[-1]
    if name == "uv.lock":
        return list(_uv_lock(relative, text))
    if name == "poetry.lock":
        return list(_poetry_lock(relative, text))
    if name == "package-lock.json":
        return list(_package_lock(relative, text))
    kind = manifest_kind(relative)
    if kind == "pyproject":
        return list(_pyproject(relative, text))
    if kind == "requirements":
        return list(_requirements(relative, text))
    if kind == "package.json":
        return list(_package_json(relative, text))
    return []


def _pypi(manifest: str, section: str, text: str, dev: bool) -> DeclaredDependency | None:
    parsed = parse_requirement(text)
    if parsed is None:
        return None
    name, pin = parsed
    spec = text.split(";", 1)[0].strip()
    constraint = re.sub(r"^[A-Za-z0-9._-]+\s*(?:\[[^\]]*\])?", "", spec).strip()
    return DeclaredDependency(
        ecosystem="pypi", name=name, version=pin, constraint=constraint, manifest=manifest, section=section, dev=dev
    )


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _pyproject(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    doc = tomllib.loads(text)
    project = _table(doc.get("project"))
    groups: list[tuple[str, Any, bool]] = [("project.dependencies", project.get("dependencies"), False)]
    for extra, items in _table(project.get("optional-dependencies")).items():
        groups.append((f"project.optional-dependencies.{extra}", items, extra.lower() in _DEV_GROUPS))
    for group, items in _table(doc.get("dependency-groups")).items():
        groups.append((f"dependency-groups.{group}", items, True))
    tool = _table(doc.get("tool"))
    groups.append(("tool.uv.dev-dependencies", _table(tool.get("uv")).get("dev-dependencies"), True))
    for section, items, dev in groups:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, str):  # {include-group = "test"} is not a package
                dep = _pypi(manifest, section, item, dev)
                if dep:
                    yield dep
    poetry = _table(tool.get("poetry"))
    tables: list[tuple[str, Any, bool]] = [
        ("tool.poetry.dependencies", poetry.get("dependencies"), False),
        ("tool.poetry.dev-dependencies", poetry.get("dev-dependencies"), True),
    ]
    for group, body in _table(poetry.get("group")).items():
        tables.append((f"tool.poetry.group.{group}.dependencies", _table(body).get("dependencies"), group != "main"))
    for section, table, dev in tables:
        for name, value in _table(table).items():
            if name.lower() == "python":
                continue
            if isinstance(value, dict):
                if any(key in value for key in ("git", "path", "url")):
                    continue
                value = value.get("version", "")
            constraint = value.strip() if isinstance(value, str) else ""
            pin = _POETRY_PIN.match(constraint)
            yield DeclaredDependency(
                ecosystem="pypi",
                name=name,
                version=pin.group(1) if pin else None,
                constraint=constraint,
                manifest=manifest,
                section=section,
                dev=dev,
            )


def _requirements(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    # requirements-dev.txt, requirements/test.txt
    dev = bool(_DEV_FILE.search(manifest.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower()))
    for raw in text.splitlines():
        line = _requirements_line(raw)
        dep = _pypi(manifest, "requirements", line, dev) if line else None
        if dep:
            yield dep


def _package_json(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    doc = json.loads(text)
    for section, dev in (("dependencies", False), ("optionalDependencies", False), ("devDependencies", True)):
        for name, spec in _table(_table(doc).get(section)).items():
            if not isinstance(spec, str):
                continue
            target = _npm_entry(name, spec)
            if target is None:
                continue  # git, file, link, workspace: not from the registry
            yield DeclaredDependency(
                ecosystem="npm",
                name=target[0],
                version=target[1],
                constraint=spec.strip(),
                manifest=manifest,
                section=section,
                dev=dev,
            )


def _uv_lock(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    for package in tomllib.loads(text).get("package", []):
        package = _table(package)
        name, version = package.get("name"), package.get("version")
        if isinstance(name, str) and isinstance(version, str) and "registry" in _table(package.get("source")):
            yield DeclaredDependency(
                ecosystem="pypi", name=name, version=version, manifest=manifest, section="lock", direct=False
            )


def _poetry_lock(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    for package in tomllib.loads(text).get("package", []):
        package = _table(package)
        name, version = package.get("name"), package.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or package.get("source"):
            continue  # a git, path or url source (or another index) has a "source" table
        groups = package.get("groups")
        dev = package.get("category") == "dev" or (isinstance(groups, list) and bool(groups) and "main" not in groups)
        yield DeclaredDependency(
            ecosystem="pypi", name=name, version=version, manifest=manifest, section="lock", dev=dev, direct=False
        )


def _package_lock(manifest: str, text: str) -> Iterator[DeclaredDependency]:
    doc = _table(json.loads(text))

    def entry(name: str, body: dict[str, Any]) -> DeclaredDependency | None:
        version, resolved = body.get("version"), body.get("resolved")
        if body.get("link") or not isinstance(version, str) or semver_key(version) is None:
            return None
        if isinstance(resolved, str) and not resolved.startswith(("http://", "https://")):
            return None  # git, file: not a registry release
        dev = body.get("dev") is True or body.get("devOptional") is True
        return DeclaredDependency(
            ecosystem="npm", name=name, version=version, manifest=manifest, section="lock", dev=dev, direct=False
        )

    packages = doc.get("packages")
    if isinstance(packages, dict):  # lockfileVersion 2 and 3
        for path, body in packages.items():
            if "node_modules/" not in path or not isinstance(body, dict):
                continue
            name = body.get("name") or path.rsplit("node_modules/", 1)[1]
            found = entry(str(name), body)
            if found:
                yield found
        return

    def walk(dependencies: Any) -> Iterator[DeclaredDependency]:  # lockfileVersion 1: nested
        for name, body in _table(dependencies).items():
            if isinstance(body, dict):
                found = entry(name, body)
                if found:
                    yield found
                yield from walk(body.get("dependencies"))

    yield from walk(doc.get("dependencies"))


# ================================================================ versions


_PEP440 = re.compile(
    r"^\s*v?(?:(?P<epoch>\d+)!)?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre_l>a|alpha|b|beta|c|rc|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:-(?P<post_n1>\d+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d*))?"
    r"(?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d*))?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?\s*$",
    re.IGNORECASE,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_INF = 1 << 62

Key = tuple[Any, ...]


def pep440_key(version: str) -> Key | None:
    """A sort key ordering PEP 440 versions as pip does (dev < pre < final < post); ``None`` if not one."""
    match = _PEP440.match(version)
    if not match:
        return None
    release = [int(part) for part in match.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre_l, dev_l = match.group("pre_l"), match.group("dev_l")
    post = match.group("post_n1") or match.group("post_n2")
    has_post = match.group("post_n1") is not None or match.group("post_l") is not None
    if pre_l:
        pre: Key = (0, _PRE_RANK[pre_l.lower()], int(match.group("pre_n") or 0))
    elif dev_l and not has_post:
        pre = (-1,)
    else:
        pre = (1,)
    return (
        int(match.group("epoch") or 0),
        tuple(release),
        pre,
        int(post or 0) if has_post else -1,
        int(match.group("dev_n") or 0) if dev_l else _INF,
    )


_SEMVER = re.compile(r"^\s*[=v]*(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?\s*$")


def semver_key(version: str) -> Key | None:
    """A sort key for a full semver version (release after its pre-releases); ``None`` if not one."""
    match = _SEMVER.match(version)
    if not match:
        return None
    pre = match.group(4)
    if pre is None:
        tag: Key = (1,)
    else:
        tag = (0, *((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")))
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)), tag)


_PARTIAL = re.compile(r"^[=v]*(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+\S*)?$")
_LOWEST: Key = (0,)  # sorts below every pre-release tag


def _bounds(token: str) -> list[tuple[str, Key]] | None:
    """One comparator of an npm range as ``[(op, key), ...]``; ``None`` if unreadable."""
    op_match = re.match(r"^(<=|>=|<|>|=|\^|~>?)?(.*)$", token)
    assert op_match is not None  # the pattern matches every string
    op, text = op_match.group(1) or "", op_match.group(2)
    if text in ("", "*", "x", "X"):
        return []
    match = _PARTIAL.match(text)
    if not match:
        return None
    parts = [None if p is None or p in "xX*" else int(p) for p in match.group(1, 2, 3)]
    given = next((i for i, p in enumerate(parts) if p is None), 3)  # how many numbers are given
    nums = [p or 0 for p in parts[:given]] + [0] * (3 - given)
    pre = match.group(4)
    base: Key = (*nums, semver_key(f"0.0.0-{pre}")[3] if pre else (1,))  # type: ignore[index]
    low: Key = (*nums, _LOWEST)

    def bump(index: int) -> Key:
        bumped = [*nums[:index], nums[index] + 1] + [0] * (2 - index)
        return (*bumped, _LOWEST)

    if op in ("", "="):
        return [("==", base)] if given == 3 else [(">=", low), ("<", bump(given - 1))] if given else []
    if op == "^":
        first = next((i for i, n in enumerate(nums[:given]) if n != 0), max(given - 1, 0))
        return [(">=", base if given == 3 else low), ("<", bump(first))]
    if op.startswith("~"):
        return [(">=", base if given == 3 else low), ("<", bump(min(1, given - 1) if given else 0))]
    if op == ">":
        return [(">", base)] if given == 3 else [(">=", bump(given - 1))]
    if op == "<=":
        return [("<=", base)] if given == 3 else [("<", bump(given - 1))]
    return [(op, base if given == 3 else low)]  # >= and <


def npm_range_matches(version: str, spec: str) -> bool:
    """Whether ``version`` satisfies the npm semver range ``spec`` (``^1.2.0``, ``>=2.0.0 <2.3.1 || 3.x``).

    Pre-release versions compare by number, as the advisories' ranges need; an
    unreadable range matches nothing.
    """
    key = semver_key(version)
    if key is None:
        return False
    for alternative in spec.split("||"):
        text = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", alternative.strip())
        hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", text)
        tokens = [f">={hyphen.group(1)}", f"<={hyphen.group(2)}"] if hyphen else text.split()
        bounds: list[tuple[str, Key]] = []
        readable = True
        for token in tokens:
            found = _bounds(token)
            if found is None:
                readable = False
                break
            bounds.extend(found)
        if readable and all(_compare(key, op, bound) for op, bound in bounds):
            return True
    return False


def _compare(key: Key, op: str, bound: Key) -> bool:
    return {
        "==": key == bound,
        ">=": key >= bound,
        ">": key > bound,
        "<=": key <= bound,
        "<": key < bound,
    }[op]


def _release_line(key: Key, ecosystem: Ecosystem) -> tuple[int, int]:
    """(major, minor) of a version key."""
    if ecosystem == "npm":
        return (key[0], key[1])
    release = (*key[1], 0, 0)
    return (release[0], release[1])


def _is_pre(key: Key, ecosystem: Ecosystem) -> bool:
    return bool(key[3] != (1,)) if ecosystem == "npm" else bool(key[2] != (1,) or key[4] != _INF)


# ================================================================ the audit


@dataclass
class _Package:
    ecosystem: Ecosystem
    name: str
    versions: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    direct: bool = False
    dev: bool = True


@dataclass
class _Findings:
    """What the registries said about one package; empty means no ticket."""

    advisories: list[tuple[str, list[str], str]] = field(default_factory=list)  # (id, aliases, summary)
    affected: list[str] = field(default_factory=list)  # versions the advisories affect
    safe: str | None = None
    no_fix: bool = False
    yanked: list[tuple[str, str | None]] = field(default_factory=list)
    deprecated: str | None = None  # the whole package
    deprecated_versions: list[tuple[str, str]] = field(default_factory=list)
    behind: tuple[str, str, str] | None = None  # (current, latest, "2 major versions")
    latest: str | None = None

    def __bool__(self) -> bool:
        return bool(self.advisories or self.yanked or self.deprecated or self.deprecated_versions or self.behind)


def dependency_fingerprint(repo: str, ecosystem: Ecosystem, name: str) -> str:
    """Stable per (repo, ecosystem, package): new advisories update the ticket, they do not add one."""
    key = canonical_pypi_name(name) if ecosystem == "pypi" else name
    return hashlib.sha256(f"{SOURCE}\0{repo}\0{ecosystem}\0{key}".encode()).hexdigest()


def audit_dependencies(
    deps: list[DeclaredDependency], client: RegistryClient, *, repo: str, config: WatchdogConfig
) -> AuditResult:
    """Ask the registries about every package of ``deps`` and return one ticket per package with a problem.

    Per package: known advisories of the versions in use (the pinned or locked ones;
    for an unpinned PyPI dependency, the latest release), a yanked pinned release, a
    deprecated package or version, and how far the version in use is behind the latest
    (``majors_behind``/``minors_behind``; for ``0.x`` versions a minor step counts as a
    major one, as semver has it). Dependencies only a lock file names are checked for
    advisories only. When a registry cannot be reached for a package, ``warnings`` say
    so and that package gets no ticket.
    """
    packages = _group(deps, config)
    result = AuditResult()
    npm_advisories, npm_failure = _npm_bulk(packages, client, result.warnings)
    found: list[tuple[_Package, _Findings]] = []
    for package in packages:
        try:
            if package.ecosystem == "pypi":
                findings = _audit_pypi(package, client, result.warnings)
            else:
                if npm_failure and package.versions:
                    result.warnings.append(
                        f"npm {package.name}: not audited, the advisory look-up failed ({npm_failure}); no ticket"
                    )
                    continue
                findings = _audit_npm(package, client, npm_advisories, result.warnings)
        except RegistryUnreachable as error:
            result.warnings.append(f"{package.ecosystem} {package.name}: registry unreachable ({error}); no ticket")
            continue
        except PackageNameInvalid as error:
            result.warnings.append(f"{package.ecosystem} {package.name}: {error}; not audited")
            continue
        if findings is None:
            continue
        result.checked += 1
        if findings.behind and not _behind_counts(findings.behind, config):
            findings.behind = None
        if findings:
            found.append((package, findings))
    found.sort(key=lambda item: (_urgency(item[1]), item[0].ecosystem, item[0].name))
    result.problems = [_problem(package, findings, repo) for package, findings in found[: config.max_tickets]]
    if len(found) > config.max_tickets:
        left = len(found) - config.max_tickets
        result.warnings.append(f"{left} more dependency problem(s) not filed this run (watchdog.max_tickets)")
    return result


def _group(deps: list[DeclaredDependency], config: WatchdogConfig) -> list[_Package]:
    by_key: dict[tuple[Ecosystem, str], _Package] = {}
    for dep in deps:
        package = by_key.setdefault(dep.key, _Package(dep.ecosystem, dep.name))
        if dep.direct and not package.direct:
            package.name, package.direct, package.dev = dep.name, True, dep.dev
        elif dep.direct or not package.direct:
            package.dev = package.dev and dep.dev
        if dep.version:
            package.versions.add(dep.version)
        package.files.add(dep.manifest)
    kept = [
        package
        for package in by_key.values()
        if (config.include_dev or not package.dev)
        and (package.direct or (config.include_transitive and package.versions))
    ]
    return sorted(kept, key=lambda p: (p.ecosystem, p.name.lower()))


def _npm_bulk(
    packages: list[_Package], client: RegistryClient, warnings: list[str]
) -> tuple[dict[str, list[NpmAdvisory]], str | None]:
    query = {p.name: sorted(p.versions) for p in packages if p.ecosystem == "npm" and p.versions}
    if not query:
        return {}, None
    try:
        answer = client.npm_advisories(query)
    except (RegistryUnreachable, PackageNameInvalid) as error:
        warnings.append(f"npm advisories: {error}")
        return {}, str(error)
    if answer is None:
        warnings.append(
            f"npm advisories: {client.npm_url} has no bulk advisory endpoint; npm packages checked for "
            "deprecation and age only"
        )
        return {}, None
    return answer, None


def _audit_pypi(package: _Package, client: RegistryClient, warnings: list[str]) -> _Findings | None:
    project = client.pypi(package.name)
    if project is None:
        warnings.append(f"pypi {package.name}: not on PyPI (a private package?); not audited")
        return None
    findings = _Findings(latest=project.latest)
    versions = sorted(package.versions, key=lambda v: pep440_key(v) or ())
    advisories: dict[str, Vulnerability] = {}
    if versions:
        for version in versions:
            release = _pypi_release(project, version)
            if release is not None and release.yanked and package.direct:
                findings.yanked.append((version, release.yanked_reason))
            detail = client.pypi_version(package.name, version)
            if detail is not None and detail.vulnerabilities:
                findings.affected.append(version)
                for vulnerability in detail.vulnerabilities:
                    advisories.setdefault(vulnerability.id, vulnerability)
    elif project.latest_vulnerabilities and project.latest:
        findings.affected.append(project.latest)
        for vulnerability in project.latest_vulnerabilities:
            advisories.setdefault(vulnerability.id, vulnerability)
    if advisories:
        findings.advisories = [(a.id, a.aliases, _first_line(a.details)) for a in advisories.values()]
        current = pep440_key(findings.affected[-1])
        findings.safe = _pypi_safe(project, current, list(advisories.values()))
        findings.no_fix = findings.safe is None
    if package.direct:
        if project.inactive:
            findings.deprecated = "the project marks itself Development Status :: 7 - Inactive"
        if versions:
            findings.behind = _behind(versions[0], project.latest, "pypi")
    return findings


def _pypi_release(project: PypiProject, version: str) -> Any:
    if version in project.releases:
        return project.releases[version]
    wanted = pep440_key(version)
    return next((r for v, r in project.releases.items() if wanted is not None and pep440_key(v) == wanted), None)


def _pypi_safe(project: PypiProject, current: Key | None, advisories: list[Vulnerability]) -> str | None:
    """The lowest installable final release above ``current`` that every advisory lists as fixed."""
    fixes = [[k for k in (pep440_key(v) for v in a.fixed_in) if k is not None] for a in advisories]
    if any(not fixed for fixed in fixes):
        return None
    candidates = sorted(
        (key, version)
        for version, release in project.releases.items()
        if release.files and not release.yanked
        for key in [pep440_key(version)]
        if key is not None and not _is_pre(key, "pypi") and (current is None or key > current)
    )
    for key, version in candidates:
        line = _release_line(key, "pypi")
        # Fixed when at or past the last fix, or at or past the fix of its own release line
        # (advisories list one fix per maintained line: 3.2.25, 4.2.11, 5.0.3).
        if all(
            key >= max(fixed) or any(f <= key and _release_line(f, "pypi") == line for f in fixed) for fixed in fixes
        ):
            return version
    return None


def _audit_npm(
    package: _Package, client: RegistryClient, advisories: dict[str, list[NpmAdvisory]], warnings: list[str]
) -> _Findings | None:
    relevant = [
        advisory
        for advisory in advisories.get(package.name, [])
        if any(npm_range_matches(v, advisory.vulnerable_versions) for v in package.versions)
    ]
    if not package.direct and not relevant:
        return _Findings()  # a locked transitive dependency without advisories: nothing more to ask
    document = client.npm(package.name)
    if document is None:
        warnings.append(f"npm {package.name}: not on the npm registry (a private package?); not audited")
        return None
    findings = _Findings(latest=document.latest)
    versions = sorted(package.versions, key=lambda v: semver_key(v) or ())
    if relevant:
        findings.advisories = [(_npm_id(a), [f"npm {a.id}"], a.title) for a in relevant]
        findings.affected = [v for v in versions if any(npm_range_matches(v, a.vulnerable_versions) for a in relevant)]
        findings.safe = _npm_safe(document, findings.affected[-1], relevant)
        findings.no_fix = findings.safe is None
    if package.direct:
        if document.deprecated:
            findings.deprecated = document.deprecated
        else:
            for version in versions:
                meta = document.versions.get(version)
                if meta is not None and meta.deprecated:
                    findings.deprecated_versions.append((version, meta.deprecated))
        if versions:
            findings.behind = _behind(versions[0], document.latest, "npm")
    return findings


def _npm_id(advisory: NpmAdvisory) -> str:
    return advisory.ghsa or f"npm-advisory-{advisory.id}"


def _npm_safe(document: NpmPackage, current: str, advisories: list[NpmAdvisory]) -> str | None:
    """The lowest final, non-deprecated version above ``current`` that no advisory range covers."""
    floor = semver_key(current)
    candidates = sorted(
        (key, version)
        for version, meta in document.versions.items()
        for key in [semver_key(version)]
        if key is not None and not _is_pre(key, "npm") and not meta.deprecated and (floor is None or key > floor)
    )
    for _, version in candidates:
        if not any(npm_range_matches(version, a.vulnerable_versions) for a in advisories):
            return version
    return None


def _behind(current: str, latest: str | None, ecosystem: Ecosystem) -> tuple[str, str, str] | None:
    if latest is None:
        return None
    key_of = pep440_key if ecosystem == "pypi" else semver_key
    have, newest = key_of(current), key_of(latest)
    if have is None or newest is None or _is_pre(newest, ecosystem) or newest <= have:
        return None
    (major, minor), (new_major, new_minor) = _release_line(have, ecosystem), _release_line(newest, ecosystem)
    if major == 0 and new_major == 0:
        # semver: below 1.0 a minor step may break, so it counts as a major one.
        return (current, latest, f"{new_minor - minor} major version(s)") if new_minor > minor else None
    if new_major > major:
        return (current, latest, f"{new_major - major} major version(s)")
    if new_minor > minor:
        return (current, latest, f"{new_minor - minor} minor version(s)")
    return None


def _behind_counts(behind: tuple[str, str, str], config: WatchdogConfig) -> bool:
    count = int(behind[2].split()[0])
    if "major" in behind[2]:
        return config.majors_behind > 0 and count >= config.majors_behind
    return config.minors_behind > 0 and count >= config.minors_behind


def _urgency(findings: _Findings) -> tuple[int, int]:
    if findings.advisories or findings.yanked:
        return (0, -len(findings.advisories))
    if findings.deprecated or findings.deprecated_versions:
        return (1, 0)
    return (2, 0)


def _first_line(text: str, limit: int = 160) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _problem(package: _Package, findings: _Findings, repo: str) -> DiscoveredProblem:
    name, label = package.name, ("PyPI" if package.ecosystem == "pypi" else "npm")
    fingerprint = dependency_fingerprint(repo, package.ecosystem, name)
    files = ", ".join(sorted(package.files))
    ids = [advisory_id for advisory_id, _, _ in findings.advisories]
    short: list[str] = []
    criteria: list[str] = []
    lines = [f"{label} package {name}, declared in {files}{'' if package.direct else ' (transitive)'}."]
    if findings.advisories:
        count = len(ids)
        short.append(f"{count} known vulnerabilit{'y' if count == 1 else 'ies'}")
        lines.append(f"\nKnown vulnerabilities of {', '.join(findings.affected)}:")
        for advisory_id, aliases, summary in findings.advisories:
            also = f" ({', '.join(aliases)})" if aliases else ""
            lines.append(f"- {advisory_id}{also}{': ' + summary if summary else ''}")
        if findings.safe:
            lines.append(f"Safe version: {findings.safe}.")
            criteria.append(
                f"{name} resolves to {findings.safe} or later wherever it is declared or locked "
                f"(fixes {', '.join(ids)})"
            )
        else:
            lines.append("No release fixes all of them yet.")
            criteria.append(
                f"{name} no longer resolves to a version affected by {', '.join(ids)} "
                "(no fixed release exists yet: replace or remove it)"
            )
    for version, reason in findings.yanked:
        short.append(f"pinned {version} is yanked")
        lines.append(f"\nThe pinned release {version} is yanked{': ' + reason if reason else ''}.")
        target = findings.safe or findings.latest
        criteria.append(
            f"{name} is no longer pinned to the yanked {version}" + (f" (use {target} or later)" if target else "")
        )
    if findings.deprecated:
        short.append("deprecated")
        lines.append(f"\nDeprecated: {findings.deprecated}")
        criteria.append(
            f"{name} is replaced by a maintained alternative or removed (deprecated: {findings.deprecated!r})"
        )
    for version, message in findings.deprecated_versions:
        short.append(f"{version} deprecated")
        lines.append(f"\nVersion {version} is deprecated: {message}")
        criteria.append(f"{name} is updated past the deprecated {version} (latest: {findings.latest})")
    if findings.behind:
        current, latest, distance = findings.behind
        short.append(f"{distance} behind ({current} → {latest})")
        lines.append(f"\n{current} is {distance} behind the latest release {latest}.")
        criteria.append(
            f"{name} is updated to {latest} (or to the newest release the code supports, "
            "with the reason in the pull request)"
        )
    criteria.append("The repository's tests pass")
    verb = "Replace" if findings.deprecated else "Update"
    ticket = Ticket(
        id=f"DEP-{fingerprint[:10]}",
        type=TicketType.CHORE,
        priority=Priority.HIGH
        if findings.advisories or findings.yanked
        else (Priority.MEDIUM if findings.deprecated or findings.deprecated_versions else Priority.LOW),
        context=TicketContext(repo=repo, filepaths=sorted(package.files)),
        acceptance_criteria=criteria,
        title=f"{verb} {label} dependency {name}: {', '.join(short)}"[:200],
        description="\n".join(lines),
        labels=[READY_LABEL],
        source=SOURCE,
        fingerprint=fingerprint,
    )
    return DiscoveredProblem(ticket=ticket, sample=", ".join(short))
