"""The Janitor's domain logic: what is outdated, how to update one package, what the pull request says.

Plain functions, no Docker and no Temporal. The shell scripts built here run inside
a sandbox (``/workspace`` is the repository); their output carries ``@@janitor``
marker lines that the parsers here read back. The host never runs anything in the
sandbox's repository: it reads files through ``cat`` in the sandbox and hands new
file content in as base64.

* Listing: for npm projects :data:`NPM_TOOL` (a small npm registry client run with
  ``python3 -I`` in the sandbox: the image has no ``npm``) installs ``package.json``'s
  dependencies into ``node_modules`` and prints the outdated ones in ``npm outdated
  --json``'s shape; for Python projects (pins in ``requirements.txt`` or
  ``pyproject.toml``) the packages are installed into a venv in the workspace and
  ``pip list --outdated --local --format=json`` is asked, then kept to the pinned,
  declared dependencies.
* Updating, one package at a time: the host rewrites the pin (``name==new`` in the
  Python manifest, or the exact version in ``package.json``'s dependency sections), the
  sandbox installs again (pip, or :data:`NPM_TOOL`), runs the repository's tests, and
  commits if they pass, else restores the manifests and the environment and records why.

Everything the sandbox prints is untrusted (the repository's code runs there): package
names are checked with :func:`factory.governance.registry.validate_name` and versions
against a plain character set before they reach a command, a manifest or a file name;
the ones that fail are dropped and reported.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import urlsplit

from factory.errors import PackageNameInvalid
from factory.governance.dependencies import parse_requirement
from factory.governance.registry import canonical_pypi_name, validate_name
from factory.models import JanitorUpdate, OutdatedPackage

__all__ = [
    "MARK",
    "PYTHON_MANIFESTS",
    "VENV",
    "already_committed",
    "between",
    "commit_subject",
    "install_command",
    "janitor_head",
    "log_slug",
    "manifest_script",
    "npm_declared",
    "npm_tool",
    "package_problem",
    "parse_manifests",
    "parse_npm_outdated",
    "parse_pip_outdated",
    "parse_update_output",
    "project_kind",
    "pull_request_body",
    "python_pins",
    "rewrite_npm_pin",
    "rewrite_pin",
    "summarise_test_output",
    "survey_problem",
    "survey_script",
    "update_script",
    "valid_version",
]

MARK = "@@janitor"
VENV = ".janitor-venv"
PYTHON_MANIFESTS = ("requirements.txt", "pyproject.toml")
# Python lock files the Janitor does not regenerate (the sandbox has pip, not their tools): the pull
# request says so, with the command that brings each up to date.
PYTHON_LOCKS = {
    "uv.lock": "uv lock",
    "poetry.lock": "poetry lock --no-update",
    "pdm.lock": "pdm lock --update-reuse",
    "Pipfile.lock": "pipenv lock",
}
NPM_MANIFEST = "package.json"
NPM_SECTIONS = ("dependencies", "devDependencies", "optionalDependencies")
# Versions reach shell commands, manifests and commit messages: plain characters only.
_VERSION = re.compile(r"[0-9A-Za-z.+!_-]+", re.ASCII)
_HEAD_MARKER = re.compile(r"<!-- factory-janitor head=([0-9a-f]{40,64}) -->")
# Caches go to the sandbox's /tmp: the root file system is read-only and /home/agent is small.
_ENV = (
    "export PIP_CACHE_DIR=/tmp/janitor-pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "
    "npm_config_cache=/tmp/janitor-npm-cache npm_config_update_notifier=false npm_config_fund=false "
    "npm_config_audit=false\n"
)


# --------------------------------------------------------------------------
# What kind of project, and what it pins


def manifest_script() -> str:
    """Prints each manifest the Janitor understands between markers (run in the sandbox)."""
    lines = ["set -u"]
    for name in (*PYTHON_MANIFESTS, NPM_MANIFEST):
        lines.append(f'if [ -f {name} ] && [ ! -L {name} ]; then echo "{MARK} file {name}"; cat -- {name}; echo; fi')
    for name in ("package-lock.json", *PYTHON_LOCKS):
        lines.append(f'[ -f {name} ] && echo "{MARK} present {name}"')
    lines.append(f'echo "{MARK} end"')
    return "\n".join(lines) + "\n"


def parse_manifests(output: str) -> tuple[dict[str, str], set[str]]:
    """The manifests' text by file name, and the names of files reported as present."""
    files: dict[str, list[str]] = {}
    present: set[str] = set()
    current: str | None = None
    for line in output.splitlines():
        if line.startswith(f"{MARK} file "):
            current = line.removeprefix(f"{MARK} file ").strip()
            files[current] = []
        elif line.startswith(f"{MARK} present "):
            present.add(line.removeprefix(f"{MARK} present ").strip())
            current = None
        elif line.startswith(f"{MARK} end"):
            current = None
        elif current is not None:
            files[current].append(line)
    # ``cat`` and the ``echo`` after it add one newline: the file's own last newline is kept.
    return {name: "\n".join(lines[:-1]) + "\n" if lines else "" for name, lines in files.items()}, present


def project_kind(files: Mapping[str, str]) -> Literal["pypi", "npm"] | None:
    """``npm`` when there is a package.json, ``pypi`` for requirements.txt / pyproject.toml, else None."""
    if NPM_MANIFEST in files:
        return "npm"
    if any(name in files for name in PYTHON_MANIFESTS):
        return "pypi"
    return None


def valid_version(version: object) -> bool:
    """A version made only of ``[0-9A-Za-z.+!_-]`` (what PEP 440 and semver versions use), not too long."""
    return isinstance(version, str) and len(version) <= 100 and _VERSION.fullmatch(version) is not None


def package_problem(ecosystem: Literal["pypi", "npm"], name: str, *versions: object) -> str | None:
    """Why a package named by the sandbox (or a manifest) must not be used, or None.

    The name must be one the registry could hold and every version plain characters:
    both end up in shell commands, manifests and log file names on the host.
    """
    try:
        validate_name(name, ecosystem)
    except PackageNameInvalid as exc:
        return str(exc)
    for version in versions:
        if not valid_version(version):
            shown = repr(version)[:60]
            return f"{name}: invalid version {shown} (only letters, digits and . + ! _ -)"
    return None


def log_slug(name: str) -> str:
    """``name`` as a safe file-name part: anything but ``[A-Za-z0-9_.-]`` becomes ``-``, never ``.``/``..``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:100]
    return slug if slug.strip(".") else "-" * max(1, len(slug))


def _pyproject_dependencies(text: str) -> list[str]:
    """The PEP 508 strings of ``[project] dependencies`` (none when the file is not valid TOML)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    project = data.get("project")
    deps = project.get("dependencies") if isinstance(project, dict) else None
    return [dep for dep in deps if isinstance(dep, str)] if isinstance(deps, list) else []


def _requirements_lines(text: str) -> list[str]:
    kept = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            kept.append(line)
    return kept


def python_pins(files: Mapping[str, str], rejected: list[str] | None = None) -> dict[str, tuple[str, str, str]]:
    """Exactly pinned (``==``) dependencies: canonical name → (name as written, version, manifest).

    A pin whose name or version is not plain (see :func:`package_problem`) is left out,
    and why is appended to ``rejected`` when given.
    """
    pins: dict[str, tuple[str, str, str]] = {}
    for manifest in PYTHON_MANIFESTS:
        text = files.get(manifest)
        if text is None:
            continue
        requirements = _pyproject_dependencies(text) if manifest == "pyproject.toml" else _requirements_lines(text)
        for requirement in requirements:
            parsed = parse_requirement(requirement)
            if parsed is None or parsed[1] is None:
                continue
            name, version = parsed[0], parsed[1]
            problem = package_problem("pypi", name, version)
            if problem is not None:
                if rejected is not None:
                    rejected.append(f"{manifest}: {problem}")
                continue
            pins.setdefault(canonical_pypi_name(name), (name, version, manifest))
    return pins


def rewrite_pin(text: str, name: str, old: str, new: str, *, manifest: str = "requirements.txt") -> str:
    """``name==old`` becomes ``name==new`` wherever the pin is written (any spelling of the name).

    In ``pyproject.toml`` only the requirement strings of ``[project] dependencies`` that pin
    ``name==old`` are changed, each as the exact TOML string literal it is written as.
    """
    if manifest == "pyproject.toml":
        return _rewrite_pyproject_pin(text, name, old, new)
    return _rewrite_requirement_pin(text, name, old, new)


def _rewrite_requirement_pin(text: str, name: str, old: str, new: str) -> str:
    spelled = r"[-_.]+".join(re.escape(part) for part in re.split(r"[-_.]+", name))
    pattern = re.compile(
        rf"(?im)(?<![A-Za-z0-9._-])({spelled}(?:\[[^\]]*\])?\s*==\s*){re.escape(old)}(?![A-Za-z0-9.+])"
    )
    updated, count = pattern.subn(lambda m: m.group(1) + new, text)
    if count == 0:
        raise ValueError(f"no pin {name}=={old} found to update")
    return updated


_TOML_TOKEN = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]]')


def _project_dependencies_span(text: str) -> tuple[int, int] | None:
    """Where the ``[project]`` table's ``dependencies = [...]`` array is written (start, end), if found."""
    header = re.search(r"(?m)^[ \t]*\[project\][ \t]*(?:#.*)?$", text)
    if header is None:
        return None
    table_end = re.compile(r"(?m)^[ \t]*\[").search(text, header.end())
    key = re.compile(r"(?m)^[ \t]*dependencies[ \t]*=[ \t]*\[").search(
        text, header.end(), table_end.start() if table_end else len(text)
    )
    if key is None:
        return None
    depth = 0
    for token in _TOML_TOKEN.finditer(text, key.end() - 1):
        if token.group() == "[":
            depth += 1
        elif token.group() == "]":
            depth -= 1
            if depth == 0:
                return key.end() - 1, token.end()
    return None


def _rewrite_pyproject_pin(text: str, name: str, old: str, new: str) -> str:
    """Each ``[project] dependencies`` string pinning ``name==old`` is rewritten as the literal it is
    written as, inside that array only; the result must parse to the same TOML but for those strings."""
    key = canonical_pypi_name(name)
    before = _pyproject_dependencies(text)
    after = []
    for requirement in before:
        parsed = parse_requirement(requirement)
        matches = parsed is not None and canonical_pypi_name(parsed[0]) == key and parsed[1] == old
        after.append(_rewrite_requirement_pin(requirement, name, old, new) if matches else requirement)
    span = _project_dependencies_span(text)
    if after == before or span is None:
        raise ValueError(f"no pin {name}=={old} found to update in pyproject.toml")
    start, end = span
    array = text[start:end]
    for requirement, replacement in zip(before, after, strict=True):
        if requirement == replacement:
            continue
        for quote in ('"', "'"):
            literal = quote + requirement + quote
            if literal in array:
                array = array.replace(literal, quote + replacement + quote)
                break
    updated = text[:start] + array + text[end:]
    expected = tomllib.loads(text)
    expected["project"]["dependencies"] = after
    try:
        if tomllib.loads(updated) == expected:
            return updated
    except tomllib.TOMLDecodeError:
        pass
    raise ValueError(f"the pin {name}=={old} in pyproject.toml is written in a way the Janitor does not rewrite")


# --------------------------------------------------------------------------
# Parsing the package managers' "outdated" listings


def parse_npm_outdated(
    text: str, declared: Iterable[str] | None = None, rejected: list[str] | None = None
) -> list[OutdatedPackage]:
    """``npm outdated --json``: every package whose latest version differs from the installed one.

    The listing is printed in the sandbox: an entry whose name is not a valid npm name or
    whose versions are not plain is dropped, and why is appended to ``rejected`` when given.
    """
    data = _json_object(text)
    wanted = set(declared) if declared is not None else None
    found = []
    for name, entry in data.items():
        if not isinstance(entry, dict) or (wanted is not None and name not in wanted):
            continue
        current, latest = entry.get("current"), entry.get("latest")
        if isinstance(latest, str) and isinstance(current, str) and current != latest:
            problem = package_problem("npm", name, current, latest)
            if problem is not None:
                if rejected is not None:
                    rejected.append(problem)
                continue
            found.append(OutdatedPackage(ecosystem="npm", name=name, current=current, latest=latest))
    return found


def parse_pip_outdated(
    text: str, pins: Mapping[str, tuple[str, str, str]] | None = None, rejected: list[str] | None = None
) -> list[OutdatedPackage]:
    """``pip list --outdated --format=json``, kept to the pinned dependencies when ``pins`` is given.

    The current version is the pin (what the repository asks for), in the order the pins are written.
    The listing is printed in the sandbox: an entry with an invalid name or a version that is not
    plain is dropped, and why is appended to ``rejected`` when given.
    """
    raw = text.strip()
    start = raw.find("[")
    try:
        data = json.loads(raw[start:]) if start >= 0 else []
    except ValueError:
        raise ValueError("pip list --outdated did not print JSON") from None
    latest: dict[str, tuple[str, str, str]] = {}
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and all(
            isinstance(entry.get(k), str) for k in ("name", "version", "latest_version")
        ):
            latest[canonical_pypi_name(entry["name"])] = (entry["name"], entry["version"], entry["latest_version"])
    found = []
    if pins is None:
        for name, current, new in latest.values():
            problem = package_problem("pypi", name, current, new)
            if problem is None:
                found.append(OutdatedPackage(ecosystem="pypi", name=name, current=current, latest=new))
            elif rejected is not None:
                rejected.append(problem)
        return found
    for key, (name, pinned, manifest) in pins.items():
        if key in latest and latest[key][2] != pinned:
            problem = package_problem("pypi", name, pinned, latest[key][2])
            if problem is not None:
                if rejected is not None:
                    rejected.append(problem)
                continue
            found.append(
                OutdatedPackage(ecosystem="pypi", name=name, current=pinned, latest=latest[key][2], manifest=manifest)
            )
    return found


def _json_object(text: str) -> dict[str, object]:
    raw = text.strip()
    if not raw:
        return {}
    start = raw.find("{")
    try:
        data = json.loads(raw[start:]) if start >= 0 else {}
    except ValueError:
        raise ValueError("npm outdated did not print JSON") from None
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------
# The scripts that run in the sandbox


def _index_options(pip_index_url: str) -> str:
    options = f"--index-url {shlex.quote(pip_index_url)}"
    parts = urlsplit(pip_index_url)
    if parts.scheme == "http" and parts.hostname:
        options += f" --trusted-host {shlex.quote(parts.hostname)}"
    return options


def _pip_install(pins: Mapping[str, tuple[str, str, str]], pip_index_url: str) -> str:
    specs = " ".join(shlex.quote(f"{name}=={version}") for name, version, _ in pins.values())
    return f"pip install -q {_index_options(pip_index_url)} {specs}" if specs else "true"


def install_command(
    kind: str, pins: Mapping[str, tuple[str, str, str]], *, pip_index_url: str, npm_registry: str
) -> str:
    """Installs what the manifests ask for: pip into the workspace's venv, or the npm client into node_modules."""
    if kind == "npm":
        return npm_tool("install", npm_registry)
    return _pip_install(pins, pip_index_url)


_ACTIVATE = f"if [ -f {VENV}/bin/activate ]; then . {VENV}/bin/activate; fi"


def survey_script(
    kind: str,
    pins: Mapping[str, tuple[str, str, str]],
    *,
    test_command: str,
    pip_index_url: str,
    npm_registry: str,
) -> str:
    """Install the project's dependencies in the workspace, run its tests as they are, list what is outdated."""
    excluded = ["/" + VENV + "/", "/node_modules/"]
    lines = [
        "set -u",
        _ENV.strip(),
        # The environment lives in the workspace but never in a commit (the clone has no .git/info).
        "mkdir -p .git/info",
        *(
            f"grep -qxF {shlex.quote(p)} .git/info/exclude 2>/dev/null || echo {shlex.quote(p)} >> .git/info/exclude"
            for p in excluded
        ),
    ]
    install = install_command(kind, pins, pip_index_url=pip_index_url, npm_registry=npm_registry)
    if kind == "npm":
        outdated = npm_tool("outdated", npm_registry)
    else:
        # -I: the workspace (the repository) is not on sys.path, so its files cannot shadow venv or the stdlib.
        lines += [f'python3 -I -m venv --system-site-packages {VENV} || {{ echo "{MARK} install-failed"; exit 0; }}']
        outdated = f"pip list --outdated --local --format=json {_index_options(pip_index_url)}"
    lines += [
        _ACTIVATE,
        f'echo "{MARK} install-begin"',
        f'{{\n{install}\n}} 2>&1 || {{ echo "{MARK} install-end"; echo "{MARK} install-failed"; exit 0; }}',
        f'echo "{MARK} install-end"',
        f'echo "{MARK} tests-begin"',
        f"( {test_command} ) 2>&1",
        "rc=$?",
        f'echo "{MARK} tests-end $rc"',
        "[ $rc -eq 0 ] || exit 0",
        f'echo "{MARK} outdated-begin"',
        outdated,
        f'echo "{MARK} outdated-end"',
    ]
    return "\n".join(lines) + "\n"


def survey_problem(output: str, exit_code: int) -> str | None:
    """Why the survey found nothing to work on: the install failed, the tests fail already, it did not finish."""
    if f"{MARK} install-failed" in output:
        return "installing the current dependencies failed: " + summarise_test_output(between(output, "install"))
    ended = [line for line in output.splitlines() if line.startswith(f"{MARK} tests-end ")]
    if ended and ended[-1].rsplit(" ", 1)[1] != "0":
        code = ended[-1].rsplit(" ", 1)[1]
        return f"the tests fail before any update (exit {code}): " + summarise_test_output(between(output, "tests"))
    if f"{MARK} outdated-end" not in output:
        return f"the survey did not finish (exit {exit_code}): " + summarise_test_output(output)
    return None


def npm_declared(package_json: str) -> set[str]:
    """The names package.json depends on (all dependency sections)."""
    try:
        data = json.loads(package_json)
    except ValueError:
        return set()
    names: set[str] = set()
    if isinstance(data, dict):
        for section in NPM_SECTIONS:
            table = data.get(section)
            if isinstance(table, dict):
                names.update(str(name) for name in table)
    return names


def already_committed(files: Mapping[str, str], package: OutdatedPackage) -> bool:
    """The manifests already pin the new version (a retry after the update was committed)."""
    if package.ecosystem == "npm":
        try:
            data = json.loads(files.get(NPM_MANIFEST, ""))
        except ValueError:
            return False
        sections = [data.get(s) for s in NPM_SECTIONS] if isinstance(data, dict) else []
        return any(isinstance(s, dict) and s.get(package.name) == package.latest for s in sections)
    pin = python_pins(files).get(canonical_pypi_name(package.name))
    return pin is not None and pin[1] == package.latest


# The image has node but not npm (Debian's npm package cannot be bootstrapped into the image):
# this small client of the npm registry protocol installs package.json's dependencies into
# node_modules and prints the outdated ones in ``npm outdated --json``'s shape. It runs in the
# sandbox with python3, through the egress proxy (urllib reads HTTP(S)_PROXY).
NPM_TOOL = r"""
import io, json, os, re, shutil, sys, tarfile, urllib.parse, urllib.request

action, registry = sys.argv[1], sys.argv[2].rstrip("/")
manifest = json.load(open("package.json"))
sections = ("dependencies", "devDependencies", "optionalDependencies")
declared = {}
for section in sections:
    declared.update(manifest.get(section) or {})
packuments = {}

def packument(name):
    if name not in packuments:
        url = registry + "/" + urllib.parse.quote(name, safe="@")
        with urllib.request.urlopen(url, timeout=60) as answer:
            packuments[name] = json.load(answer)
    return packuments[name]

def key(version):
    return tuple(int(part) for part in re.match(r"(\d+)\.(\d+)\.(\d+)", version).groups())

def pick(name, spec):
    doc = packument(name)
    spec = (spec or "*").strip()
    versions = [v for v in doc.get("versions", {}) if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    latest = doc.get("dist-tags", {}).get("latest")
    if spec in ("*", "", "latest"):
        return latest
    if spec in doc.get("versions", {}):
        return spec
    found = re.fullmatch(r"([\^~]|>=)?\s*v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?", spec)
    if not found:
        raise SystemExit(f"unsupported version range {spec!r} for {name}")
    op, major, minor, patch = found.groups()
    low = (int(major), int(minor) if minor and minor.isdigit() else 0, int(patch) if patch and patch.isdigit() else 0)
    def fits(v):
        k = key(v)
        if k < low:
            return False
        if op == ">=":
            return True
        if op == "^":
            return k[0] == low[0] if low[0] else k[:2] == low[:2]
        if op == "~" or (minor and minor.isdigit() and not (patch and patch.isdigit())):
            return k[:2] == low[:2]
        if not (minor and minor.isdigit()):
            return k[0] == low[0]
        return k == low
    matching = sorted((v for v in versions if fits(v)), key=key)
    if not matching:
        raise SystemExit(f"no version of {name} matches {spec!r}")
    return matching[-1]

def installed(name):
    try:
        return json.load(open(os.path.join("node_modules", name, "package.json"))).get("version")
    except OSError:
        return None

def install(name, spec, done):
    version = pick(name, spec)
    if (name, version) in done:
        return
    done.add((name, version))
    meta = packument(name)["versions"][version]
    if installed(name) != version:
        target = os.path.join("node_modules", name)
        shutil.rmtree(target, ignore_errors=True)
        with urllib.request.urlopen(meta["dist"]["tarball"], timeout=120) as answer:
            data = answer.read()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive.getmembers():
                parts = member.name.split("/", 1)
                if len(parts) < 2 or not (member.isfile() or member.isdir()):
                    continue
                if parts[1].startswith("/") or ".." in parts[1].split("/"):
                    raise SystemExit(f"unsafe path {member.name!r} in the tarball of {name}")
                member.name = parts[1]
                member.mode = 0o755 if member.isdir() else 0o644
                archive.extract(member, target)
        print(f"added {name}@{version}")
    for dep, dep_spec in (meta.get("dependencies") or {}).items():
        install(dep, dep_spec, done)

if action == "install":
    done = set()
    for name, spec in declared.items():
        install(name, spec, done)
elif action == "outdated":
    report = {}
    for name, spec in declared.items():
        latest = packument(name).get("dist-tags", {}).get("latest")
        current = installed(name)
        if latest and current != latest:
            report[name] = {"current": current, "wanted": pick(name, spec), "latest": latest}
    print(json.dumps(report, indent=2))
"""


def npm_tool(action: str, registry: str) -> str:
    """The shell command that runs :data:`NPM_TOOL` (``install`` or ``outdated``) in the sandbox."""
    # -I (isolated): /workspace, the current directory, is not on sys.path, so a json.py (or any
    # module) in the repository cannot shadow the standard library the tool imports.
    return f"python3 -I - {action} {shlex.quote(registry)} <<'JANITOR_NPM'\n{NPM_TOOL.strip()}\nJANITOR_NPM"


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}]')


def _object_end(text: str, start: int) -> int:
    """The index just past the JSON object whose ``{`` is at ``start`` (strings skipped), or -1."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text, start):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return token.end()
    return -1


def rewrite_npm_pin(text: str, name: str, new: str) -> str:
    """The ``dependencies`` / ``devDependencies`` / ``optionalDependencies`` entry of ``name`` becomes
    the exact version ``new``; nothing else in package.json changes (a script or field that happens to
    carry the same name is left alone). The layout is kept; if it cannot be, the file is written again
    as two-space-indented JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("package.json is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("package.json is not a JSON object")
    sections = [s for s in NPM_SECTIONS if isinstance(data.get(s), dict) and name in data[s]]
    if not sections:
        raise ValueError(f"no entry {name} found in package.json to update")
    expected = json.loads(text)
    for section in sections:
        expected[section][name] = new
    entry = re.compile(rf"({re.escape(json.dumps(name))}\s*:\s*\")(?:[^\"\\]|\\.)*(\")")
    updated = text
    for section in sections:
        # Last first, so the earlier positions still hold after a replacement changes the length.
        for found in reversed(list(re.finditer(rf"{re.escape(json.dumps(section))}\s*:\s*{{", updated))):
            start = found.end() - 1
            end = _object_end(updated, start)
            if end < 0:
                continue
            body = entry.sub(lambda m: m.group(1) + new + m.group(2), updated[start:end])
            updated = updated[:start] + body + updated[end:]
    try:
        if json.loads(updated) == expected:
            return updated
    except ValueError:
        pass
    return json.dumps(expected, indent=2, ensure_ascii=False) + "\n"


def between(output: str, name: str) -> str:
    """The text between ``@@janitor NAME-begin`` and ``@@janitor NAME-end``."""
    begin, end = f"{MARK} {name}-begin", f"{MARK} {name}-end"
    if begin not in output:
        return ""
    return output.split(begin, 1)[1].split(end, 1)[0]


def commit_subject(package: OutdatedPackage) -> str:
    return f"Update {package.name} from {package.current} to {package.latest}"


def update_script(
    package: OutdatedPackage,
    *,
    manifest: str,
    manifest_text: str,
    install: str,
    restore: str,
    test_command: str,
) -> str:
    """Write the updated manifest, install, run the tests; commit on success, else restore; report with markers.

    ``install`` installs what the new manifest asks for, ``restore`` what the committed one does.
    Re-running it after a crash finds its own commit and reports it instead of updating twice.
    """
    subject = commit_subject(package)
    body = f"The repository's tests pass with {package.name} {package.latest}.\n\nJanitor: {package.ecosystem}"
    encoded = base64.b64encode(manifest_text.encode()).decode()
    put_back = f"git checkout -q -- . && {{\n{restore}\n}} >/dev/null 2>&1"
    lines = [
        "set -u",
        _ENV.strip(),
        f'if git log --format=%s | grep -qxF {shlex.quote(subject)}; then echo "{MARK} committed"; exit 0; fi',
        # Whatever a crashed attempt left behind goes first.
        "git checkout -q -- . 2>/dev/null",
        _ACTIVATE,
        f'echo "{MARK} install-begin"',
        f"printf '%s' {encoded} | base64 -d > {shlex.quote(manifest)} && {{\n{install}\n}} 2>&1",
        "rc=$?",
        f'echo "{MARK} install-end $rc"',
        f'if [ $rc -ne 0 ]; then {put_back}; echo "{MARK} install-failed"; exit 0; fi',
        f'echo "{MARK} tests-begin"',
        f"( {test_command} ) 2>&1",
        "rc=$?",
        f'echo "{MARK} tests-end $rc"',
        "if [ $rc -eq 0 ]; then",
        f"  git add -u && git commit -q --no-verify -m {shlex.quote(subject)} -m {shlex.quote(body)} "
        f'&& echo "{MARK} committed" || echo "{MARK} commit-failed"',
        "else",
        f'  {put_back}; echo "{MARK} reverted"',
        "fi",
    ]
    return "\n".join(lines) + "\n"


def parse_update_output(package: OutdatedPackage, output: str, exit_code: int) -> JanitorUpdate:
    """What became of one update: committed, or skipped with the reason and the failing output summarised."""
    markers = {line.strip() for line in output.splitlines() if line.startswith(MARK)}
    if f"{MARK} committed" in markers:
        return JanitorUpdate(package=package, committed=True)
    if f"{MARK} install-failed" in markers:
        return JanitorUpdate(
            package=package,
            committed=False,
            reason="install failed",
            summary=summarise_test_output(between(output, "install")),
        )
    if f"{MARK} reverted" in markers:
        code = next((m.rsplit(" ", 1)[1] for m in markers if m.startswith(f"{MARK} tests-end ")), "?")
        reason = "tests timed out" if code in ("124", "137") else f"tests failed (exit {code})"
        return JanitorUpdate(
            package=package, committed=False, reason=reason, summary=summarise_test_output(between(output, "tests"))
        )
    tail = summarise_test_output(output)
    reason = "the update did not finish" + (" (timed out)" if exit_code in (124, 137) else f" (exit {exit_code})")
    return JanitorUpdate(package=package, committed=False, reason=reason, summary=tail)


_FAILURE_LINE = re.compile(
    r"(FAILED|ERROR|Error|error|AssertionError|assert|Traceback|not ok|failed|✖|npm ERR!|Exception)"
)


def summarise_test_output(output: str, max_lines: int = 8, max_chars: int = 600) -> str:
    """A few telling lines of a failing run: lines that name a failure, else the last lines."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip() and not line.startswith(MARK)]
    telling = [line for line in lines if _FAILURE_LINE.search(line)]
    chosen = (telling or lines)[-max_lines:]
    text = "\n".join(chosen)
    return text if len(text) <= max_chars else "…" + text[-(max_chars - 1) :]


# --------------------------------------------------------------------------
# The pull request


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>").replace("`", "'") or " "


def pull_request_body(
    repo: str,
    updates: Iterable[JanitorUpdate],
    head_commit: str,
    test_command: str,
    checked: bool,
    stale_locks: Iterable[str] = (),
) -> str:
    """Committed updates as a table, skipped ones as another with the reason and the failing output summarised;
    Python lock files left as they were (``stale_locks``) with the command that updates each."""
    done = [u for u in updates]
    committed = [u for u in done if u.committed]
    skipped = [u for u in done if not u.committed]
    lines = [
        f"Weekly dependency update of **{repo}**: each package was updated on its own, the repository's tests "
        f"(`{test_command}`) were run, and the update was committed only if they passed.",
        "",
        f"### Updated ({len(committed)})",
        "| package | from | to |",
        "|---|---|---|",
        *(f"| {_cell(u.package.name)} | {u.package.current} | {u.package.latest} |" for u in committed),
    ]
    if skipped:
        lines += [
            "",
            f"### Skipped ({len(skipped)})",
            "| package | from | to | why | test output (summary) |",
            "|---|---|---|---|---|",
            *(
                f"| {_cell(u.package.name)} | {u.package.current} | {u.package.latest} | {_cell(u.reason or '')} "
                f"| {_cell(u.summary or '')} |"
                for u in skipped
            ),
        ]
    present = set(stale_locks)
    locks = [name for name in PYTHON_LOCKS if name in present]
    if locks and committed:
        lines += [
            "",
            "**Lock files not regenerated:** the updates above changed the pins, not "
            + ", ".join(f"`{name}`" for name in locks)
            + ". Before merging, run "
            + " and ".join(f"`{PYTHON_LOCKS[name]}`" for name in locks)
            + " on this branch and commit the result.",
        ]
    lines += [
        "",
        "Every changed dependency passed the Hallucination Check."
        if checked
        else "Governance is off: the Hallucination Check did not run.",
        "",
        "_Opened by the Software Factory's Janitor. A human merges._",
        f"<!-- factory-janitor head={head_commit} -->",
    ]
    return "\n".join(lines)


def janitor_head(body: str) -> str | None:
    """The commit the Janitor last pushed, as its pull request body records it."""
    match = _HEAD_MARKER.search(body)
    return match.group(1) if match else None
