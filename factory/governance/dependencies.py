"""Which dependencies a change adds or changes: read from a unified diff and the files after it.

Manifests understood: ``pyproject.toml`` (PEP 621 ``dependencies`` and
``optional-dependencies``, PEP 735 ``[dependency-groups]``, ``[build-system] requires``,
Poetry's dependency tables), ``requirements*.txt`` / ``requirements*.in`` (and ``*.txt``
under a ``requirements/`` folder), ``setup.cfg`` (``install_requires`` and friends,
``extras_require``) and ``package.json`` (the four dependency sections). A dependency
counts when its line is added by the diff, unless the same entry is also removed
(a moved line, or a trailing comma added next to it).

Python files add one more source: a new top-level import whose module is neither in
the standard library, nor a module of the repository itself, nor provided by a
dependency declared in any manifest of the repository after the change. Such an
import is reported as a PyPI reference with ``kind="import"``; the check blocks it
as "imported but not declared". Imports guarded by ``try/except ImportError`` are
reported too: an optional dependency should still be declared (as an extra).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field
from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchedFile, PatchSet

from factory.errors import DiffInvalid
from factory.governance.registry import canonical_pypi_name

__all__ = [
    "IMPORT_TO_DISTRIBUTIONS",
    "DependencyRef",
    "declared_pypi_names",
    "dependencies_from_diff",
    "manifest_kind",
    "parse_requirement",
    "pinned_npm_version",
]

ManifestKind = Literal["pyproject", "requirements", "setup.cfg", "package.json"]


class DependencyRef(BaseModel):
    """One dependency to verify: where it comes from and what it names."""

    ecosystem: Literal["pypi", "npm"]
    name: str
    version: str | None = Field(default=None, description="Only an exact pin (``==``, a bare npm version).")
    source: str = Field(description='Where it was found: "pyproject.toml:12", "import in app/x.py:3", "command line".')
    path: str | None = None
    line: int | None = Field(default=None, ge=1)
    kind: Literal["manifest", "import", "command"] = "manifest"

    def display(self) -> str:
        if self.version is None:
            return self.name
        return f"{self.name}@{self.version}" if self.ecosystem == "npm" else f"{self.name}=={self.version}"


# Import names that differ from the distribution that provides them. The first
# distribution is the one reported when the import is not declared.
IMPORT_TO_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "yaml": ("pyyaml", "ruamel.yaml"),
    "PIL": ("pillow", "pil"),
    "sklearn": ("scikit-learn",),
    "skimage": ("scikit-image",),
    "cv2": ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "bs4": ("beautifulsoup4",),
    "dateutil": ("python-dateutil",),
    "jwt": ("pyjwt",),
    "attr": ("attrs",),
    "dotenv": ("python-dotenv",),
    "magic": ("python-magic",),
    "Crypto": ("pycryptodome", "pycrypto"),
    "Cryptodome": ("pycryptodomex",),
    "OpenSSL": ("pyopenssl",),
    "serial": ("pyserial",),
    "usb": ("pyusb",),
    "git": ("gitpython",),
    "docx": ("python-docx",),
    "pptx": ("python-pptx",),
    "multipart": ("python-multipart",),
    "jose": ("python-jose",),
    "slugify": ("python-slugify",),
    "dns": ("dnspython",),
    "telegram": ("python-telegram-bot",),
    "discord": ("discord.py",),
    "socketio": ("python-socketio",),
    "engineio": ("python-engineio",),
    "gi": ("pygobject",),
    "win32api": ("pywin32",),
    "win32com": ("pywin32",),
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "psycopg": ("psycopg", "psycopg-binary"),
    "MySQLdb": ("mysqlclient",),
    "zmq": ("pyzmq",),
    "nacl": ("pynacl",),
    "mpl_toolkits": ("matplotlib",),
    "pkg_resources": ("setuptools",),
    "_pytest": ("pytest",),
    "grpc": ("grpcio",),
    "kafka": ("kafka-python",),
    "ldap": ("python-ldap",),
    "fitz": ("pymupdf",),
    "websocket": ("websocket-client",),
    "faiss": ("faiss-cpu", "faiss-gpu"),
    "umap": ("umap-learn",),
    "Bio": ("biopython",),
    "Levenshtein": ("levenshtein", "python-levenshtein"),
    "ruamel": ("ruamel.yaml",),
    "OpenGL": ("pyopengl",),
    "pylab": ("matplotlib",),
    "wx": ("wxpython",),
    "cairo": ("pycairo",),
    "Xlib": ("python-xlib",),
    "rest_framework": ("djangorestframework",),
    "corsheaders": ("django-cors-headers",),
    "debug_toolbar": ("django-debug-toolbar",),
    "environ": ("django-environ",),
    "snappy": ("python-snappy",),
}

# Namespace packages shared by many distributions (``azure-storage-blob`` gives ``azure.storage.blob``):
# the import is provided when any declared distribution starts with ``<namespace>-``.
NAMESPACES = frozenset(
    {"azure", "google", "zope", "backports", "jaraco", "sphinxcontrib", "opentelemetry", "oslo", "plone", "flufl"}
)
# Never reported: ``google`` is split over dozens of distributions (google-cloud-*, protobuf, googleapis-common-protos).
SKIPPED_IMPORTS = frozenset({"google", "__main__"})
# Common ways a distribution name wraps the module it provides.
_DIST_PATTERNS = ("{}", "python-{}", "py{}", "{}-python", "{}-py", "{}-binary", "{}-cpu", "{}-gpu", "{}-headless")

_PEP508_NAME = re.compile(r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[(?P<extras>[^\]]*)\])?")
_SPECIFIER = re.compile(r"^\(?\s*(?:===|==|!=|<=|>=|~=|<|>)")
_PIN = re.compile(r"^\s*(===?)\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*$")
_NPM_EXACT = re.compile(r"^=?\s*v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$")
_NPM_NOT_REGISTRY = re.compile(
    r"^(?:file|link|git|git\+[a-z]+|github|gitlab|bitbucket|https?|workspace|portal|patch|exec):"
)
_POETRY_PIN = re.compile(r"^(?:==)?\s*(\d+(?:\.\d+)*(?:[A-Za-z0-9.+!_-]*)?)$")
_INLINE_TABLE = re.compile(r"\{[^}]*\}")  # {include-group = "test"} in [dependency-groups]
_TOML_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'')
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]')
_JSON_COLON = re.compile(r"\s*:\s*")
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_JSON_PAIR = re.compile(r'"(?P<name>(?:[^"\\]|\\.)+)"\s*:\s*"(?P<spec>(?:[^"\\]|\\.)*)"')
_IMPORT_LINE = re.compile(r"^\s*import\s+([A-Za-z_][\w.]*(?:\s+as\s+\w+)?(?:\s*,\s*[A-Za-z_][\w.]*(?:\s+as\s+\w+)?)*)")
_FROM_LINE = re.compile(r"^\s*from\s+([A-Za-z_][\w.]*)\s+import\b")

NPM_SECTIONS = frozenset({"dependencies", "devDependencies", "peerDependencies", "optionalDependencies"})
SETUP_CFG_KEYS = frozenset({"install_requires", "setup_requires", "tests_require"})


# ---------------------------------------------------------------- single entries


def parse_requirement(text: str) -> tuple[str, str | None] | None:
    """``(name, pinned version or None)`` of a PEP 508 requirement from a registry; ``None`` otherwise.

    ``None`` means "not a registry requirement we can verify": a URL or path, a
    direct reference (``name @ https://…``), or text that is not a requirement.
    """
    spec = text.split(";", 1)[0].strip()
    match = _PEP508_NAME.match(spec)
    if not match:
        return None
    rest = spec[match.end() :].strip()
    if rest and not _SPECIFIER.match(rest):
        return None  # "name @ url", or garbage after the name
    version = None
    for clause in rest.strip("()").split(","):
        pin = _PIN.match(clause)
        if pin and "*" not in pin.group(2):
            version = pin.group(2)
    return match.group("name"), version


def pinned_npm_version(spec: str) -> str | None:
    """The version a package.json range pins exactly (``1.2.3``, ``=1.2.3``, ``v1.2.3``), else ``None``."""
    match = _NPM_EXACT.match(spec.strip())
    return match.group(1) if match else None


def _npm_entry(name: str, spec: str) -> tuple[str, str | None] | None:
    """What a package.json entry installs from the registry: ``(name, pin)``, or ``None`` for git/file/URL specs."""
    spec = spec.strip()
    if spec.startswith("npm:"):  # an alias: "foo": "npm:bar@^1.0" installs bar
        target = spec[4:]
        at = target.rfind("@")
        if at > 0:
            return target[:at], pinned_npm_version(target[at + 1 :])
        return target, None
    if _NPM_NOT_REGISTRY.match(spec) or "://" in spec or "/" in spec:
        return None  # git, file, link, workspace, URL, "user/repo" GitHub shorthand
    return name, pinned_npm_version(spec)


def _requirements_line(raw: str) -> str | None:
    """The requirement on one line of a pip requirements file, or ``None`` for comments, options, URLs, paths."""
    line = raw.strip().removesuffix("\\").strip()
    if not line or line.startswith(("#", "-")):
        return None
    line = re.split(r"\s+#", line, maxsplit=1)[0]
    line = re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip()
    if "://" in line or line.startswith((".", "/", "~", "$")) or line.endswith((".whl", ".tar.gz", ".zip")):
        return None
    return line or None


# ---------------------------------------------------------------- manifests


@dataclass(frozen=True)
class _Entry:
    line: int
    name: str
    version: str | None
    raw: str  # what identifies the entry in a removed line as well


def manifest_kind(path: str) -> ManifestKind | None:
    pure = PurePosixPath(path)
    name = pure.name
    if name == "pyproject.toml":
        return "pyproject"
    if name == "setup.cfg":
        return "setup.cfg"
    if name == "package.json":
        return "package.json"
    if name.endswith((".txt", ".in")) and (name.startswith("requirements") or pure.parent.name == "requirements"):
        return "requirements"
    return None


def _strip_toml_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def _toml_strings(text: str) -> list[str]:
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in _TOML_STRING.finditer(text)]


def _is_pep508_array(table: str, key: str) -> bool:
    return (
        (table == "project" and key == "dependencies")
        or table in ("project.optional-dependencies", "dependency-groups")
        or (table == "build-system" and key == "requires")
    )


def _is_poetry_table(table: str) -> bool:
    return table in ("tool.poetry.dependencies", "tool.poetry.dev-dependencies") or bool(
        re.fullmatch(r"tool\.poetry\.group\.[^.]+\.dependencies", table)
    )


def _pyproject_entries(lines: list[str]) -> Iterator[_Entry]:
    table = ""
    in_array = False
    for number, raw in enumerate(lines, 1):
        line = _strip_toml_comment(raw).strip()
        if not line:
            continue
        if in_array:
            for text in _toml_strings(_INLINE_TABLE.sub("", line)):
                parsed = parse_requirement(text)
                if parsed:
                    yield _Entry(number, parsed[0], parsed[1], text)
            if "]" in _TOML_STRING.sub("", line):
                in_array = False
            continue
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", line)
        if header:
            table = header.group(1).replace('"', "").replace("'", "").replace(" ", "")
            continue
        pair = re.match(r"""^(["']?)([A-Za-z0-9._-]+)\1\s*=\s*(.*)$""", line)
        if not pair:
            continue
        key, value = pair.group(2), pair.group(3).strip()
        if _is_pep508_array(table, key) and value.startswith("["):
            for text in _toml_strings(_INLINE_TABLE.sub("", value)):
                parsed = parse_requirement(text)
                if parsed:
                    yield _Entry(number, parsed[0], parsed[1], text)
            in_array = "]" not in _TOML_STRING.sub("", value)
        elif _is_poetry_table(table) and key.lower() != "python":
            entry = _poetry_entry(number, key, value)
            if entry:
                yield entry


def _poetry_entry(number: int, name: str, value: str) -> _Entry | None:
    if value.startswith("{"):
        if re.search(r"\b(?:git|path|url)\s*=", value):
            return None
        found = re.search(r"""\bversion\s*=\s*["']([^"']*)["']""", value)
        constraint = found.group(1) if found else ""
    elif value.startswith(("'", '"')):
        strings = _toml_strings(value)
        constraint = strings[0] if strings else ""
    else:
        constraint = ""  # an array of constraints, one per Python version
    pin = _POETRY_PIN.match(constraint.strip())
    return _Entry(number, name, pin.group(1) if pin else None, f"{name}={value}")


def _requirements_entries(lines: list[str]) -> Iterator[_Entry]:
    for number, raw in enumerate(lines, 1):
        text = _requirements_line(raw)
        parsed = parse_requirement(text) if text else None
        if text and parsed:
            yield _Entry(number, parsed[0], parsed[1], text)


def _setup_cfg_entries(lines: list[str]) -> Iterator[_Entry]:
    section = ""
    key = ""
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if raw[0] in " \t":
            value = stripped
        else:
            header = re.match(r"^\[([^\]]+)\]", stripped)
            if header:
                section, key = header.group(1).strip().lower(), ""
                continue
            pair = re.match(r"^([^=:]+)[=:](.*)$", stripped)
            if not pair:
                key = ""
                continue
            key, value = pair.group(1).strip().lower(), pair.group(2).strip()
        relevant = (section == "options" and key in SETUP_CFG_KEYS) or section == "options.extras_require"
        if not relevant or not value or value.startswith(("file:", "attr:")):
            continue
        text = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        parsed = parse_requirement(text)
        if parsed:
            yield _Entry(number, parsed[0], parsed[1], text)


def _package_json_entries(lines: list[str]) -> Iterator[_Entry]:
    stack: list[str | None] = []  # the key of each open object or array
    pending_key: str | None = None
    for number, line in enumerate(lines, 1):
        for token in _JSON_TOKEN.finditer(line):
            text = token.group()
            if text.startswith('"'):
                rest = line[token.end() :]
                colon = _JSON_COLON.match(rest)
                pending_key = _json_text(text[1:-1]) if colon else None
                value = _JSON_STRING.match(rest, colon.end()) if colon else None
                # The innermost open object, not "depth 2": a file pieced together from hunks starts mid-way.
                if pending_key is not None and value and stack and stack[-1] in NPM_SECTIONS:
                    spec = _json_text(value.group(1))
                    target = _npm_entry(pending_key, spec)
                    if target:
                        yield _Entry(number, target[0], target[1], f"{pending_key}:{spec}")
            elif text in "{[":
                stack.append(pending_key)
                pending_key = None
            elif stack:
                stack.pop()


def _json_text(inner: str) -> str:
    try:
        value = json.loads(f'"{inner}"')
    except ValueError:
        return inner
    return value if isinstance(value, str) else inner


_PARSERS = {
    "pyproject": _pyproject_entries,
    "requirements": _requirements_entries,
    "setup.cfg": _setup_cfg_entries,
    "package.json": _package_json_entries,
}


def _entry_keys(kind: ManifestKind, line: str) -> set[str]:
    """What an entry on a removed line looks like, to recognise it when the diff only moves it."""
    if kind == "package.json":
        return {
            _normal(f"{_json_text(m.group('name'))}:{_json_text(m.group('spec'))}") for m in _JSON_PAIR.finditer(line)
        }
    if kind == "requirements":
        text = _requirements_line(line)
        return {_normal(text)} if text else set()
    keys = {_normal(text) for text in _toml_strings(line)}
    stripped = line.strip()
    if kind == "setup.cfg":
        keys.add(_normal(re.split(r"\s+#", stripped.split("=", 1)[-1], maxsplit=1)[0]))
    else:
        pair = re.match(r"""^(["']?)([A-Za-z0-9._-]+)\1\s*=\s*(.*)$""", _strip_toml_comment(stripped))
        if pair:
            keys.add(_normal(f"{pair.group(2)}={pair.group(3).strip()}"))
    return keys


def _normal(text: str) -> str:
    return re.sub(r"\s+", "", text).rstrip(",").lower()


# ---------------------------------------------------------------- Python imports


def _stdlib() -> frozenset[str]:
    return frozenset(sys.stdlib_module_names)


def _imports_in(content: str | None, added: Mapping[int, str]) -> list[tuple[int, str]]:
    """``(line, top-level module)`` of absolute imports that start on an added line."""
    if content is not None:
        try:
            tree = ast.parse(content)
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            found: list[tuple[int, str]] = []
            for node in ast.walk(tree):
                if isinstance(node, ast.Import) and node.lineno in added:
                    found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.lineno in added and node.level == 0 and node.module:
                    found.append((node.lineno, node.module.split(".")[0]))
            return sorted(found)
    found = []
    for number, text in sorted(added.items()):
        plain = _IMPORT_LINE.match(text)
        if plain:
            for part in plain.group(1).split(","):
                found.append((number, part.split()[0].split(".")[0]))
        frm = _FROM_LINE.match(text)
        if frm:
            found.append((number, frm.group(1).split(".")[0]))
    return found


def _local_modules(paths: Iterable[str]) -> tuple[set[str], dict[str, set[str]]]:
    """Top-level modules of the repository, and the modules next to each file (for script-style imports)."""
    top: set[str] = set()
    siblings: dict[str, set[str]] = {}
    for path in paths:
        parts = PurePosixPath(path).parts
        if not parts:
            continue
        stem = PurePosixPath(parts[-1]).stem if parts[-1].endswith((".py", ".pyi", ".so", ".pyx")) else parts[-1]
        parent = str(PurePosixPath(*parts[:-1])) if len(parts) > 1 else ""
        siblings.setdefault(parent, set()).add(stem)
        if len(parts) > 1:
            siblings.setdefault(str(PurePosixPath(*parts[:-2])) if len(parts) > 2 else "", set()).add(parts[-2])
        top.add(stem if len(parts) == 1 else parts[0])
        if parts[0] in ("src", "lib") and len(parts) > 1:
            top.add(PurePosixPath(parts[1]).stem)
        if parts[-1] == "__init__.py" and len(parts) >= 2:
            top.add(parts[-2])
    return top, siblings


def declared_pypi_names(files: Mapping[str, str]) -> set[str]:
    """Canonical names of every PyPI distribution declared by the manifests among ``files``."""
    declared: set[str] = set()
    for path, content in files.items():
        kind = manifest_kind(path)
        if kind and kind != "package.json":
            declared.update(canonical_pypi_name(e.name) for e in _PARSERS[kind](content.splitlines()))
        name = PurePosixPath(path).name
        if name == "setup.py":
            declared.update(canonical_pypi_name(n) for n in _setup_py_requirements(content))
        elif name == "Pipfile":
            declared.update(canonical_pypi_name(n) for n in _pipfile_packages(content))
    return declared


def _setup_py_requirements(content: str) -> list[str]:
    try:
        tree = ast.parse(content)
    except (SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("install_requires", "extras_require", "setup_requires"):
            for item in ast.walk(node.value):
                if isinstance(item, ast.Constant) and isinstance(item.value, str):
                    parsed = parse_requirement(item.value)
                    if parsed:
                        names.append(parsed[0])
    return names


def _pipfile_packages(content: str) -> list[str]:
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError:
        return []
    names: list[str] = []
    for section in ("packages", "dev-packages"):
        table = data.get(section)
        if isinstance(table, dict):
            names.extend(str(key) for key in table)
    return names


def _provided(module: str, declared: set[str]) -> bool:
    if module in SKIPPED_IMPORTS:
        return True
    candidates = [*IMPORT_TO_DISTRIBUTIONS.get(module, ()), *(p.format(module) for p in _DIST_PATTERNS)]
    if any(canonical_pypi_name(name) in declared for name in candidates):
        return True
    prefix = canonical_pypi_name(module) + "-"
    return module in NAMESPACES and any(name.startswith(prefix) for name in declared)


def _distribution_for(module: str) -> str:
    return next(iter(IMPORT_TO_DISTRIBUTIONS.get(module, ())), module)


# ---------------------------------------------------------------- the diff


def _after_lines(patched: PatchedFile, files_after: Mapping[str, str]) -> list[str]:
    """The file after the change: from ``files_after``, or pieced together from the hunks (gaps left blank)."""
    if patched.path in files_after:
        return files_after[patched.path].splitlines()
    known = {line.target_line_no: line.value.rstrip("\n") for hunk in patched for line in hunk if line.target_line_no}
    return [known.get(number, "") for number in range(1, max(known, default=0) + 1)]


def dependencies_from_diff(diff_text: str, files_after: Mapping[str, str]) -> list[DependencyRef]:
    """Dependencies a diff adds or changes, and undeclared third-party imports it introduces.

    ``files_after`` maps repository paths to their content after the change; it is
    used to know which section an added line sits in, which modules are the
    repository's own and which distributions are declared. Paths missing from it
    are pieced together from the diff's hunks.
    """
    try:
        patch = PatchSet(diff_text)
    except UnidiffParseError as error:
        raise DiffInvalid(f"the diff cannot be parsed: {error}") from error

    refs: list[DependencyRef] = []
    imports: list[tuple[str, int, str]] = []
    for patched in patch:
        if patched.is_removed_file:
            continue
        path = patched.path
        added = {
            line.target_line_no: line.value.rstrip("\n")
            for hunk in patched
            for line in hunk
            if line.is_added and line.target_line_no is not None
        }
        if not added:
            continue
        kind = manifest_kind(path)
        if kind:
            refs.extend(_manifest_refs(patched, kind, files_after))
        elif path.endswith(".py"):
            imports.extend((path, number, module) for number, module in _imports_in(files_after.get(path), added))

    if imports:
        declared_here = {canonical_pypi_name(ref.name) for ref in refs if ref.ecosystem == "pypi"}
        refs.extend(_undeclared_imports(imports, patch, files_after, declared_here))
    return _unique(refs)


def _manifest_refs(patched: PatchedFile, kind: ManifestKind, files_after: Mapping[str, str]) -> Iterator[DependencyRef]:
    added = {line.target_line_no for hunk in patched for line in hunk if line.is_added}
    removed: set[str] = set()
    for hunk in patched:
        for line in hunk:
            if line.is_removed:
                removed |= _entry_keys(kind, line.value)
    ecosystem: Literal["pypi", "npm"] = "npm" if kind == "package.json" else "pypi"
    for entry in _PARSERS[kind](_after_lines(patched, files_after)):
        if entry.line in added and _normal(entry.raw) not in removed:
            yield DependencyRef(
                ecosystem=ecosystem,
                name=entry.name,
                version=entry.version,
                source=f"{patched.path}:{entry.line}",
                path=patched.path,
                line=entry.line,
            )


def _undeclared_imports(
    imports: list[tuple[str, int, str]], patch: PatchSet, files_after: Mapping[str, str], declared_here: set[str]
) -> Iterator[DependencyRef]:
    paths = set(files_after) | {p.path for p in patch if not p.is_removed_file}
    top, siblings = _local_modules(paths)
    declared = declared_pypi_names(files_after) | declared_here
    stdlib = _stdlib()
    for path, number, module in imports:
        parent = str(PurePosixPath(path).parent)
        local = module in top or module in siblings.get("" if parent == "." else parent, set())
        if module in stdlib or local or _provided(module, declared):
            continue
        yield DependencyRef(
            ecosystem="pypi",
            name=_distribution_for(module),
            source=f"import in {path}:{number}",
            path=path,
            line=number,
            kind="import",
        )


def _unique(refs: list[DependencyRef]) -> list[DependencyRef]:
    seen: set[tuple[str, str, str | None, str]] = set()
    unique = []
    for ref in refs:
        name = canonical_pypi_name(ref.name) if ref.ecosystem == "pypi" else ref.name
        key = (ref.ecosystem, name, ref.version, ref.kind)
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return unique
