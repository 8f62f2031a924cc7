"""The Hallucination Check: is every dependency a change adds real, installable and safe?

A dependency is **blocked** when:

- its name breaks the registry's naming rules (never looked up);
- the registry has no such package, or nothing installable under that name;
- its pinned version does not exist, is yanked, or has known vulnerabilities
  (PyPI reports OSV advisories per release);
- npm marks the package (its latest version) or the pinned version deprecated;
- it is a Python import that no declared dependency provides ("imported but not declared");
- it looks like a typo-squat of a popular package (the rule is below).

It is **unverified** when the registry cannot be reached; unverified blocks too
(fail closed). It is **ok** otherwise, possibly with warnings that do not block:
first published less than ``new_package_days`` ago, an unpinned dependency whose
latest release has advisories, a project marked inactive.

Typo-squat rule. Names are normalised (PyPI: PEP 503; npm: lower case) and compared
with the bundled lists of popular names (``data/popular-*.txt``) by optimal string
alignment distance (Levenshtein counting a swap of two neighbouring letters as one
edit, so ``djnago`` is one edit from ``django``). A name is *near* a popular one
when it is not itself on the list, is at least 4 characters long, and is at most
1 edit away (names shorter than 8 characters) or 2 edits (longer names). Being near
is not enough to block: distance alone would flag real, mature packages that happen
to sit next to a famous name (``attr`` / ``attrs``). A near name blocks only when
the package also does not exist, or was first published within ``new_package_days``,
or has at most 2 releases: the marks of a squat or of a name a model made up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from rapidfuzz import process
from rapidfuzz.distance import OSA

from factory.errors import PackageNameInvalid, RegistryUnreachable
from factory.governance.dependencies import DependencyRef
from factory.governance.registry import (
    PypiProject,
    PypiRelease,
    RegistryClient,
    Vulnerability,
    canonical_pypi_name,
    validate_name,
)
from factory.models import Finding, Severity

__all__ = [
    "MAX_FEW_RELEASES",
    "DependencyVerdict",
    "PopularNames",
    "check_dependency",
    "findings_from_verdicts",
]

DATA_DIR = Path(__file__).parent / "data"
MIN_SQUAT_LENGTH = 4
SHORT_NAME = 8  # names shorter than this may be 1 edit from a popular one, longer ones 2
MAX_FEW_RELEASES = 2

Status = Literal["ok", "blocked", "unverified"]
REGISTRY_LABEL = {"pypi": "PyPI", "npm": "npm"}


class DependencyVerdict(BaseModel):
    """What the Hallucination Check says about one dependency."""

    ecosystem: Literal["pypi", "npm"]
    name: str
    version: str | None = None
    status: Status
    reasons: list[str] = Field(default_factory=list, description="Why it blocks (empty when ok).")
    warnings: list[str] = Field(default_factory=list, description="Worth a look, does not block.")
    source: str = ""
    path: str | None = None
    line: int | None = None

    @property
    def blocking(self) -> bool:
        """Blocked and unverified both block: the check fails closed."""
        return self.status != "ok"

    def display(self) -> str:
        if self.version is None:
            return self.name
        return f"{self.name}@{self.version}" if self.ecosystem == "npm" else f"{self.name}=={self.version}"


def _normalise(name: str, ecosystem: str) -> str:
    return canonical_pypi_name(name) if ecosystem == "pypi" else name.lower()


@dataclass(frozen=True)
class PopularNames:
    """The most used package names of each registry, normalised, for the typo-squat rule."""

    pypi: frozenset[str]
    npm: frozenset[str]
    _choices: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_choices", {"pypi": tuple(sorted(self.pypi)), "npm": tuple(sorted(self.npm))})

    @classmethod
    def from_names(cls, pypi: Iterable[str], npm: Iterable[str]) -> PopularNames:
        return cls(
            pypi=frozenset(_normalise(n, "pypi") for n in pypi if n.strip()),
            npm=frozenset(_normalise(n, "npm") for n in npm if n.strip()),
        )

    @classmethod
    def bundled(cls) -> PopularNames:
        """The lists shipped in ``factory/governance/data`` (read once per process)."""
        return _bundled()

    def is_popular(self, ecosystem: str, name: str) -> bool:
        return _normalise(name, ecosystem) in (self.pypi if ecosystem == "pypi" else self.npm)

    def near(self, ecosystem: str, name: str) -> tuple[str, int] | None:
        """The popular name this one is a near miss of, with the distance; ``None`` if none (or it is popular)."""
        normal = _normalise(name, ecosystem)
        if len(normal) < MIN_SQUAT_LENGTH or self.is_popular(ecosystem, name):
            return None
        limit = 1 if len(normal) < SHORT_NAME else 2
        best = process.extractOne(normal, self._choices.get(ecosystem, ()), scorer=OSA.distance, score_cutoff=limit)
        if best is None:
            return None
        return str(best[0]), int(best[1])


def _read_names(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


@functools.cache
def _bundled() -> PopularNames:
    return PopularNames.from_names(
        _read_names(DATA_DIR / "popular-pypi.txt"), _read_names(DATA_DIR / "popular-npm.txt")
    )


@dataclass
class _Facts:
    """What the registry said, as far as the typo-squat rule needs it."""

    exists: bool = False
    first_published: datetime | None = None
    releases: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_dependency(
    ref: DependencyRef,
    client: RegistryClient,
    *,
    popular: PopularNames,
    now: datetime,
    new_package_days: int,
) -> DependencyVerdict:
    """Verify one dependency against its registry; never raises for a bad name or a registry outage."""

    def verdict(status: Status, reasons: list[str], warnings: list[str] | None = None) -> DependencyVerdict:
        return DependencyVerdict(
            ecosystem=ref.ecosystem,
            name=ref.name,
            version=ref.version,
            status=status,
            reasons=reasons,
            warnings=warnings or [],
            source=ref.source,
            path=ref.path,
            line=ref.line,
        )

    try:
        validate_name(ref.name, ref.ecosystem)
    except PackageNameInvalid as error:
        return verdict("blocked", [str(error)])

    reasons: list[str] = []
    if ref.kind == "import":
        reasons.append(f"imported but not declared: no dependency in the manifests provides it ({ref.source})")
    try:
        facts = _pypi_facts(ref, client) if ref.ecosystem == "pypi" else _npm_facts(ref, client)
    except RegistryUnreachable as error:
        reasons.append(f"registry unreachable: {error} (the check fails closed)")
        return verdict("blocked" if len(reasons) > 1 else "unverified", reasons)

    reasons.extend(facts.reasons)
    warnings = list(facts.warnings)
    recent = facts.first_published is not None and facts.first_published > now - timedelta(days=new_package_days)
    if recent and facts.first_published is not None:
        age = max((now - facts.first_published).days, 0)
        warnings.append(
            f"first published {age} day(s) ago ({facts.first_published.date().isoformat()}); "
            f"packages younger than {new_package_days} days deserve a closer look"
        )

    near = popular.near(ref.ecosystem, ref.name)
    if near:
        popular_name, distance = near
        edits = f"{distance} edit{'s' if distance != 1 else ''}"
        if not facts.exists:
            reasons.append(f"did you mean {popular_name!r}? the name is {edits} from that popular package")
        elif recent or facts.releases <= MAX_FEW_RELEASES:
            why = "is new" if recent else f"has only {facts.releases} release(s)"
            reasons.append(
                f"possible typo-squat: {edits} from the popular package {popular_name!r}, and this package {why}"
            )
    return verdict("blocked" if reasons else "ok", reasons, warnings)


def _advisories(vulnerabilities: list[Vulnerability]) -> str:
    parts = []
    for vulnerability in vulnerabilities:
        extra = [alias for alias in vulnerability.aliases if alias.startswith("CVE-")][:1]
        if vulnerability.fixed_in:
            extra.append(f"fixed in {', '.join(vulnerability.fixed_in)}")
        parts.append(f"{vulnerability.id} ({'; '.join(extra)})" if extra else vulnerability.id)
    return ", ".join(parts)


def _canonical_version(version: str) -> str:
    """Enough of PEP 440 to match ``==1.0`` with a release ``1.0.0`` and ``==V1.0`` with ``1.0``."""
    text = version.strip().lower().removeprefix("v")
    head, sep, tail = text.partition("+")
    release_end = len(head)
    for index, char in enumerate(head):
        if not (char.isdigit() or char == "."):
            release_end = index
            break
    release = head[:release_end].rstrip(".")
    while release.endswith(".0") and release.count(".") > 0:
        release = release[: -len(".0")]
    return release + head[release_end:] + sep + tail


def _find_release(project: PypiProject, version: str) -> PypiRelease | None:
    if version in project.releases:
        return project.releases[version]
    wanted = _canonical_version(version)
    return next((r for v, r in project.releases.items() if _canonical_version(v) == wanted), None)


def _pypi_facts(ref: DependencyRef, client: RegistryClient) -> _Facts:
    project = client.pypi(ref.name)
    if project is None:
        return _Facts(reasons=["no such project on PyPI"])
    facts = _Facts(
        exists=True,
        first_published=project.first_published,
        releases=sum(1 for release in project.releases.values() if release.files),
    )
    if project.installable_releases == 0:
        facts.reasons.append("nothing to install: every release on PyPI is yanked or has no files")
    if any(c.startswith("Development Status :: 7") for c in project.classifiers):
        facts.warnings.append("the project marks itself inactive (Development Status :: 7 - Inactive)")
    if ref.version is None:
        if project.latest_vulnerabilities:
            facts.warnings.append(
                f"latest version {project.latest} has known vulnerabilities: "
                f"{_advisories(project.latest_vulnerabilities)}"
            )
        return facts

    release = _find_release(project, ref.version)
    if release is None:
        facts.reasons.append(f"version {ref.version} does not exist on PyPI (latest is {project.latest})")
        return facts
    yanked, yanked_reason = release.yanked, release.yanked_reason
    if release.version == project.latest:
        vulnerabilities: list[Vulnerability] | None = project.latest_vulnerabilities
    else:
        detail = client.pypi_version(ref.name, release.version)
        vulnerabilities = detail.vulnerabilities if detail else None
        if detail and detail.yanked:
            yanked, yanked_reason = True, detail.yanked_reason or yanked_reason
    if yanked:
        facts.reasons.append(f"version {release.version} is yanked" + (f": {yanked_reason}" if yanked_reason else ""))
    if vulnerabilities is None:
        facts.warnings.append(f"PyPI gave no per-version data for {release.version}: advisories not checked")
    elif vulnerabilities:
        facts.reasons.append(f"version {release.version} has known vulnerabilities: {_advisories(vulnerabilities)}")
    return facts


def _npm_facts(ref: DependencyRef, client: RegistryClient) -> _Facts:
    package = client.npm(ref.name)
    if package is None:
        return _Facts(reasons=["no such package on npm"])
    facts = _Facts(exists=True, first_published=package.first_published, releases=len(package.versions))
    if package.unpublished:
        facts.reasons.append("every version was unpublished from npm")
        return facts
    if package.deprecated:
        facts.reasons.append(f"deprecated on npm: {package.deprecated}")
    if ref.version is not None:
        version = package.versions.get(ref.version.removeprefix("v"))
        if version is None:
            facts.reasons.append(f"version {ref.version} does not exist on npm (latest is {package.latest})")
        elif version.deprecated and not package.deprecated:
            facts.reasons.append(f"version {version.version} is deprecated: {version.deprecated}")
    return facts


def _cut(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def findings_from_verdicts(verdicts: Iterable[DependencyVerdict]) -> list[Finding]:
    """Review findings: an error per blocked or unverified dependency, an info per warning (info does not block)."""
    findings = []
    for verdict in verdicts:
        label = verdict.display()
        if verdict.blocking:
            findings.append(
                Finding(
                    check="dependency",
                    path=verdict.path,
                    line=verdict.line,
                    severity=Severity.ERROR,
                    message=_cut(f"dependency {label} is {verdict.status}: {'; '.join(verdict.reasons)}"),
                )
            )
        for warning in verdict.warnings:
            findings.append(
                Finding(
                    check="dependency",
                    path=verdict.path,
                    line=verdict.line,
                    severity=Severity.INFO,
                    message=_cut(f"dependency {label}: {warning}"),
                )
            )
    return findings
