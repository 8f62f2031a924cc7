"""``factory check-deps``: the Hallucination Check for people and scripts.

    factory check-deps [--ecosystem pypi|npm] NAME[==VERSION]...
    factory check-deps --diff FILE

One line per dependency: ``NAME[==VERSION]  ok|blocked|unverified  reason; reason``
(npm pins print as ``NAME@VERSION``). Exit status 1 when anything blocks
(unverified blocks too), 2 for a usage error, 0 otherwise. Odd input (empty,
non-ASCII, very long, a path, a URL) gets its own "invalid name" line and is
never sent to a registry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from factory.config import GovernanceConfig
from factory.errors import DiffInvalid, PackageNameInvalid
from factory.governance.dependencies import (
    DependencyRef,
    dependencies_from_diff,
    manifest_kind,
    parse_requirement,
    pinned_npm_version,
)
from factory.governance.hallucination import DependencyVerdict, PopularNames, check_dependency
from factory.governance.registry import RegistryClient, validate_name

__all__ = ["parse_spec", "repo_files_for_diff", "run_check_deps"]

ECOSYSTEMS = ("pypi", "npm")
USAGE = "usage: factory check-deps [--ecosystem pypi|npm] NAME[==VERSION]... | --diff FILE"
_SKIPPED_DIRS = frozenset({".git", ".hg", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache"})
MAX_REPO_FILES = 50_000


def _shown(text: str, limit: int = 60) -> str:
    """A spec as it can be printed on one line: control characters escaped, long text cut.

    Runs of spaces are squeezed so the line can still be split on two spaces.
    """
    if not text.strip():
        return "''"
    cut = text if len(text) <= limit else text[:limit] + "…"
    if cut.isprintable() and cut.strip() == cut and "  " not in cut:
        return cut
    return repr(re.sub(" {2,}", " ", cut))


def parse_spec(text: str, ecosystem: str) -> DependencyRef:
    """A command-line spec as a dependency reference; :class:`PackageNameInvalid` for anything else.

    PyPI: ``NAME``, ``NAME==VERSION``, or any PEP 508 requirement (extras, markers,
    ranges; only ``==`` pins a version). npm: ``NAME``, ``NAME@VERSION``,
    ``@scope/NAME@VERSION`` (a range or tag after ``@`` checks the package only).
    """
    if ecosystem not in ECOSYSTEMS:
        raise ValueError(f"unknown ecosystem {ecosystem!r}: expected one of {', '.join(ECOSYSTEMS)}")
    spec = text.strip()
    if not spec:
        raise PackageNameInvalid("invalid name: empty")
    if ecosystem == "pypi":
        parsed = parse_requirement(spec)
        if parsed is None:
            # Say what is wrong with the name itself when we can (URL, path, characters), else the whole spec.
            validate_name(re.split(r"[\[\s;<>=!~@(]", spec, maxsplit=1)[0], "pypi")
            raise PackageNameInvalid(
                f"invalid requirement {_shown(spec)}: expected NAME, NAME==VERSION or a PEP 508 requirement"
            )
        name, version = parsed
        validate_name(name, "pypi")
        return DependencyRef(ecosystem="pypi", name=name, version=version, source="command line", kind="command")

    if "==" in spec:
        name, _, wanted = spec.partition("==")
    else:
        at = spec.find("@", 1)  # the "@" of a scope is not a version separator
        name, wanted = (spec[:at], spec[at + 1 :]) if at > 0 else (spec, "")
    validate_name(name.strip(), "npm")
    version = pinned_npm_version(wanted) if wanted.strip() else None
    return DependencyRef(ecosystem="npm", name=name.strip(), version=version, source="command line", kind="command")


def repo_files_for_diff(repo_dir: Path, diff_text: str) -> dict[str, str]:
    """``files_after`` for a diff applied in ``repo_dir``: every path, with the content of manifests and changed files.

    Other files map to ``""``: only their paths matter (to know the repository's own modules).
    """
    changed = set(re.findall(r"^\+\+\+ b/(.+?)\s*$", diff_text, flags=re.MULTILINE))
    files: dict[str, str] = {}
    for root, dirs, names in os.walk(repo_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in names:
            path = Path(root, name)
            relative = path.relative_to(repo_dir).as_posix()
            wanted = manifest_kind(relative) or name in ("setup.py", "Pipfile") or relative in changed
            content = ""
            if wanted:
                try:
                    content = path.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    content = ""
            files[relative] = content
            if len(files) >= MAX_REPO_FILES:
                return files
    return files


def _line(verdict: DependencyVerdict, shown: str | None = None) -> str:
    registry = "PyPI" if verdict.ecosystem == "pypi" else "npm"
    notes = list(verdict.reasons) or [f"exists on {registry}"]
    notes.extend(f"warning: {warning}" for warning in verdict.warnings)
    if verdict.source and verdict.source != "command line" and not verdict.source.startswith("import in "):
        notes.append(f"from {verdict.source}")
    return f"{shown or verdict.display()}  {verdict.status}  {'; '.join(notes)}"


def run_check_deps(
    specs: list[str],
    *,
    ecosystem: str,
    diff_file: Path | None,
    client: RegistryClient,
    settings: GovernanceConfig,
    out: Callable[[str], None],
    repo_dir: Path | None = None,
    now: datetime | None = None,
) -> int:
    """Check command-line specs and/or the dependencies a diff adds; print one line each; return the exit status.

    With ``diff_file``, ``repo_dir`` (the working tree the diff was taken from, if
    any) tells which manifests and modules the repository has, so imports of
    declared or local modules are not reported.
    """
    if ecosystem not in ECOSYSTEMS:
        out(f"error: unknown ecosystem {ecosystem!r} (expected pypi or npm)")
        return 2
    if not specs and diff_file is None:
        out(USAGE)
        return 2

    popular = PopularNames.bundled()
    moment = now or datetime.now(UTC)
    # In input order: a reference to check, or the verdict on a spec that is not even a valid name.
    items: list[DependencyRef | tuple[DependencyVerdict, str]] = []
    seen: set[tuple[str, str | None]] = set()
    for spec in specs:
        try:
            ref = parse_spec(spec, ecosystem)
        except PackageNameInvalid as error:
            invalid = DependencyVerdict(
                ecosystem="npm" if ecosystem == "npm" else "pypi",
                name=spec,
                status="blocked",
                reasons=[str(error)],
                source="command line",
            )
            items.append((invalid, _shown(spec)))
            continue
        if (ref.name, ref.version) not in seen:
            seen.add((ref.name, ref.version))
            items.append(ref)

    if diff_file is not None:
        try:
            diff_text = diff_file.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            out(f"error: cannot read the diff {diff_file}: {error.strerror or error}")
            return 2
        files_after = repo_files_for_diff(repo_dir, diff_text) if repo_dir else {}
        try:
            from_diff = dependencies_from_diff(diff_text, files_after)
        except DiffInvalid as error:
            out(f"error: {error}")
            return 2
        if not from_diff and not specs:
            out(f"no dependency added or changed in {diff_file}")
            return 0
        items.extend(from_diff)

    verdicts: list[DependencyVerdict] = []
    for item in items:
        if isinstance(item, DependencyRef):
            verdict = check_dependency(
                item, client, popular=popular, now=moment, new_package_days=settings.new_package_days
            )
            out(_line(verdict))
        else:
            verdict, shown = item
            out(_line(verdict, shown))
        verdicts.append(verdict)
    return 1 if any(verdict.blocking for verdict in verdicts) else 0
