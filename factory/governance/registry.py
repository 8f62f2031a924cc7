"""Package registry look-ups for the Hallucination Check and the Dependency Watchdog.

The PyPI JSON API, npm registry metadata (packuments) and npm's bulk advisory endpoint.

Every name is checked against the registry's naming rules before a URL is built,
so an odd name (empty, path-like, a URL, 300 characters) never reaches the network.
Answers, including "no such package" (404), are cached on disk for a TTL, one JSON
file per URL, trimmed to the fields the check reads (an npm document can weigh
megabytes). Anything but a clear answer (network error, timeout, 5xx, 429, an
unreadable body) raises :class:`RegistryUnreachable`, so the caller can fail closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field

from factory.config import Settings
from factory.errors import PackageNameInvalid, RegistryUnreachable

__all__ = [
    "NpmAdvisory",
    "NpmPackage",
    "NpmVersion",
    "PypiProject",
    "PypiRelease",
    "PypiVersion",
    "RegistryClient",
    "Vulnerability",
    "canonical_pypi_name",
    "registry_client",
    "validate_name",
]

Ecosystem = Literal["pypi", "npm"]

MAX_NAME_LENGTH = 214  # npm's limit; PyPI has none written down, but no real project comes close.

# PEP 508 / core metadata: ASCII letters and digits at both ends, ``.``, ``_``, ``-`` inside.
_PYPI_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$", re.ASCII)
# validate-npm-package-name: URL-safe characters only, no leading ``.`` or ``_``, optional ``@scope/``.
# Upper case is accepted because old packages (``JSONStream``) still carry it.
_NPM_NAME = re.compile(r"^(?:@[A-Za-z0-9~-][A-Za-z0-9._~-]*/)?[A-Za-z0-9~-][A-Za-z0-9._~-]*$", re.ASCII)
_NPM_RESERVED = frozenset({"node_modules", "favicon.ico"})

CACHE_FORMAT = 1


def canonical_pypi_name(name: str) -> str:
    """PEP 503 normalisation: ``Foo.Bar_baz`` and ``foo-bar-baz`` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def validate_name(name: str, ecosystem: Ecosystem) -> str:
    """Return ``name`` if the registry could hold it, else raise :class:`PackageNameInvalid` saying why."""
    shown = _shown(name)
    if not name:
        raise PackageNameInvalid("invalid name: empty")
    if len(name) > MAX_NAME_LENGTH:
        raise PackageNameInvalid(f"invalid name: {len(name)} characters (at most {MAX_NAME_LENGTH})")
    if "://" in name or name.startswith(("git+", "file:", "http:", "https:")):
        raise PackageNameInvalid(f"invalid name {shown}: a URL, not a registry package name")
    if name.startswith(("-", "+")):
        raise PackageNameInvalid(f"invalid name {shown}: looks like a command-line option")
    if name.startswith((".", "/", "~")) or "\\" in name or "/.." in name:
        raise PackageNameInvalid(f"invalid name {shown}: a path, not a registry package name")
    if ecosystem == "pypi":
        if not _PYPI_NAME.match(name):
            raise PackageNameInvalid(
                f"invalid name {shown}: PyPI names are ASCII letters, digits, '.', '_' and '-', "
                "starting and ending with a letter or digit"
            )
    else:
        if not _NPM_NAME.match(name) or name.lower() in _NPM_RESERVED:
            raise PackageNameInvalid(
                f"invalid name {shown}: npm names are URL-safe (letters, digits, '-', '.', '_', '~'), "
                "optionally '@scope/name', and do not start with '.' or '_'"
            )
    return name


def _shown(text: str, limit: int = 60) -> str:
    """A name as it can be printed safely: escaped, and cut when long."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return repr(cut)


class Vulnerability(BaseModel):
    """One advisory PyPI reports for a release (from the OSV database)."""

    id: str
    aliases: list[str] = Field(default_factory=list)
    fixed_in: list[str] = Field(default_factory=list)
    details: str = ""


class PypiRelease(BaseModel):
    version: str
    files: int = Field(description="Number of uploaded files (wheels, sdists).")
    uploaded_at: datetime | None = Field(default=None, description="Earliest upload time of the release's files.")
    yanked: bool = Field(default=False, description="PEP 592: a release is yanked when all its files are.")
    yanked_reason: str | None = None


class PypiProject(BaseModel):
    """What the Hallucination Check needs from ``GET /pypi/{name}/json``."""

    name: str
    latest: str | None = Field(default=None, description="``info.version``: the version pip would pick.")
    classifiers: list[str] = Field(default_factory=list)
    releases: dict[str, PypiRelease] = Field(default_factory=dict)
    latest_vulnerabilities: list[Vulnerability] = Field(
        default_factory=list, description="Advisories for ``latest`` (the project document reports only those)."
    )

    @property
    def first_published(self) -> datetime | None:
        times = [release.uploaded_at for release in self.releases.values() if release.uploaded_at]
        return min(times) if times else None

    @property
    def installable_releases(self) -> int:
        """Releases with at least one file that is not yanked."""
        return sum(1 for release in self.releases.values() if release.files and not release.yanked)

    @property
    def inactive(self) -> bool:
        """The maintainers marked the project ``Development Status :: 7 - Inactive``: PyPI's way to deprecate."""
        return any(c.startswith("Development Status :: 7") for c in self.classifiers)


class PypiVersion(BaseModel):
    """What the Hallucination Check needs from ``GET /pypi/{name}/{version}/json``."""

    name: str
    version: str
    yanked: bool = False
    yanked_reason: str | None = None
    vulnerabilities: list[Vulnerability] = Field(default_factory=list)


class NpmVersion(BaseModel):
    version: str
    deprecated: str | None = Field(default=None, description="The deprecation message, when the version has one.")
    published: datetime | None = None


class NpmPackage(BaseModel):
    """What the Hallucination Check needs from ``GET {npm_url}/{name}`` (the packument)."""

    name: str
    latest: str | None = None
    created: datetime | None = None
    unpublished: bool = Field(default=False, description="Every version was unpublished; the name is a tombstone.")
    versions: dict[str, NpmVersion] = Field(default_factory=dict)

    @property
    def first_published(self) -> datetime | None:
        times = [v.published for v in self.versions.values() if v.published]
        if self.created:
            times.append(self.created)
        return min(times) if times else None

    @property
    def deprecated(self) -> str | None:
        """The deprecation message of the latest version: npm's way of deprecating a whole package."""
        latest = self.versions.get(self.latest or "")
        return latest.deprecated if latest else None


class NpmAdvisory(BaseModel):
    """One advisory from npm's bulk advisory endpoint (what ``npm audit`` reads)."""

    id: str = Field(description="The registry's advisory number, as text.")
    url: str = ""
    title: str = ""
    severity: str = ""
    vulnerable_versions: str = Field(default="", description="A semver range: ``<4.17.21``, ``>=2.0.0 <2.3.1``.")

    @property
    def ghsa(self) -> str | None:
        """The GitHub advisory id in the advisory's URL (``GHSA-xxxx-xxxx-xxxx``), when it has one."""
        found = re.search(r"GHSA(?:-[23456789cfghjmpqrvwx]{4}){3}", self.url)
        return found.group() if found else None


class RegistryClient:
    """Synchronous client for PyPI and npm metadata, with a disk cache.

    ``cache_dir=None`` keeps answers in memory only, for the life of the client.
    ``transport`` lets tests plug in an ``httpx.MockTransport``; ``clock`` lets them move time.
    """

    def __init__(
        self,
        pypi_url: str,
        npm_url: str,
        *,
        timeout_s: float,
        cache_dir: Path | None,
        ttl_s: int,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pypi_url = pypi_url.rstrip("/")
        self.npm_url = npm_url.rstrip("/")
        self.cache_dir = cache_dir
        self.ttl_s = ttl_s
        self._clock = clock
        self._memory: dict[str, dict[str, Any]] = {}
        self._http = httpx.Client(
            timeout=timeout_s,
            transport=transport,
            follow_redirects=True,
            headers={"Accept": "application/json", "User-Agent": "software-factory-check-deps/0.1"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- PyPI

    def pypi(self, name: str) -> PypiProject | None:
        """The project, or ``None`` when PyPI has no such project."""
        validate_name(name, "pypi")
        doc = self._get_json(f"{self.pypi_url}/pypi/{canonical_pypi_name(name)}/json", _trim_pypi_project)
        return None if doc is None else _parse_pypi_project(doc)

    def pypi_version(self, name: str, version: str) -> PypiVersion | None:
        """One release with its own advisories, or ``None`` when PyPI does not know that version."""
        validate_name(name, "pypi")
        url = f"{self.pypi_url}/pypi/{canonical_pypi_name(name)}/{quote(version, safe='')}/json"
        doc = self._get_json(url, _trim_pypi_version)
        return None if doc is None else _parse_pypi_version(doc)

    # ---------------------------------------------------------------- npm

    def npm(self, name: str) -> NpmPackage | None:
        """The package, or ``None`` when the npm registry has no such package."""
        validate_name(name, "npm")
        # A scoped name keeps its "@" and has its "/" encoded: /@types%2fnode.
        doc = self._get_json(f"{self.npm_url}/{quote(name, safe='@')}", _trim_npm)
        return None if doc is None else _parse_npm(doc)

    def npm_advisories(self, versions: dict[str, list[str]]) -> dict[str, list[NpmAdvisory]] | None:
        """Advisories affecting any of the given versions, per package: ``POST /-/npm/v1/security/advisories/bulk``.

        Never cached: advisories are what changes fastest. ``None`` when the registry
        has no such endpoint (a mirror answering 404, 405 or 501); packages without
        advisories are absent from the answer.
        """
        for name in versions:
            validate_name(name, "npm")
        if not versions:
            return {}
        url = f"{self.npm_url}/-/npm/v1/security/advisories/bulk"
        try:
            response = self._http.post(url, json={name: sorted(set(v)) for name, v in versions.items()})
        except httpx.TimeoutException as error:
            raise RegistryUnreachable(f"{_host(url)} did not answer in time ({type(error).__name__})") from error
        except httpx.HTTPError as error:
            raise RegistryUnreachable(f"{_host(url)} cannot be reached: {error or type(error).__name__}") from error
        if response.status_code in (404, 405, 501):
            return None
        if response.status_code != httpx.codes.OK:
            raise RegistryUnreachable(f"{_host(url)} answered HTTP {response.status_code} for {url}")
        try:
            doc = response.json()
        except ValueError as error:
            raise RegistryUnreachable(f"{_host(url)} answered something that is not JSON for {url}") from error
        if not isinstance(doc, dict):
            raise RegistryUnreachable(f"{_host(url)} answered unexpected JSON for {url}")
        return {str(name): _npm_advisories(items) for name, items in doc.items() if _npm_advisories(items)}

    # ---------------------------------------------------------------- transport and cache

    def _get_json(self, url: str, trim: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        cached = self._cached(url)
        if cached is not None:
            body = cached["body"]
            return body if isinstance(body, dict) else None
        try:
            response = self._http.get(url)
        except httpx.TimeoutException as error:
            raise RegistryUnreachable(f"{_host(url)} did not answer in time ({type(error).__name__})") from error
        except httpx.HTTPError as error:
            raise RegistryUnreachable(f"{_host(url)} cannot be reached: {error or type(error).__name__}") from error
        if response.status_code == httpx.codes.NOT_FOUND:
            self._store(url, None)
            return None
        if response.status_code != httpx.codes.OK:
            raise RegistryUnreachable(f"{_host(url)} answered HTTP {response.status_code} for {url}")
        try:
            doc = response.json()
        except ValueError as error:
            raise RegistryUnreachable(f"{_host(url)} answered something that is not JSON for {url}") from error
        if not isinstance(doc, dict):
            raise RegistryUnreachable(f"{_host(url)} answered unexpected JSON for {url}")
        trimmed = trim(doc)
        self._store(url, trimmed)
        return trimmed

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _fresh(self, entry: dict[str, Any], url: str) -> bool:
        fetched = entry.get("fetched_at")
        return (
            entry.get("format") == CACHE_FORMAT
            and entry.get("url") == url
            and isinstance(fetched, int | float)
            and 0 <= self._clock() - fetched < self.ttl_s
        )

    def _cached(self, url: str) -> dict[str, Any] | None:
        entry = self._memory.get(url)
        if entry is not None and self._fresh(entry, url):
            return entry
        path = self._cache_path(url)
        if path is None:
            return None
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # missing or damaged: fetch again
        if isinstance(loaded, dict) and self._fresh(loaded, url):
            self._memory[url] = loaded
            return loaded
        return None

    def _store(self, url: str, body: dict[str, Any] | None) -> None:
        entry = {
            "format": CACHE_FORMAT,
            "url": url,
            "fetched_at": self._clock(),
            "status": 404 if body is None else 200,
            "body": body,
        }
        self._memory[url] = entry
        path = self._cache_path(url)
        if path is None or self.ttl_s <= 0:
            return
        # Several workers may share the cache: write a temporary file and rename it into place.
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w") as handle:
                    json.dump(entry, handle)
                os.replace(tmp, path)
            except OSError:
                Path(tmp).unlink(missing_ok=True)


def _host(url: str) -> str:
    return httpx.URL(url).host or url


# ---------------------------------------------------------------- trimming and parsing


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _trim_vulnerabilities(value: Any) -> list[dict[str, Any]]:
    return [
        {key: item.get(key) for key in ("id", "aliases", "fixed_in", "details")}
        for item in _list(value)
        if isinstance(item, dict)
    ]


def _trim_pypi_project(doc: dict[str, Any]) -> dict[str, Any]:
    info = _dict(doc.get("info"))
    releases = {
        version: [
            {key: file.get(key) for key in ("upload_time_iso_8601", "yanked", "yanked_reason")}
            for file in _list(files)
            if isinstance(file, dict)
        ]
        for version, files in _dict(doc.get("releases")).items()
    }
    return {
        "info": {key: info.get(key) for key in ("name", "version", "classifiers", "yanked", "yanked_reason")},
        "releases": releases,
        "vulnerabilities": _trim_vulnerabilities(doc.get("vulnerabilities")),
    }


def _trim_pypi_version(doc: dict[str, Any]) -> dict[str, Any]:
    info = _dict(doc.get("info"))
    return {
        "info": {key: info.get(key) for key in ("name", "version", "yanked", "yanked_reason")},
        "vulnerabilities": _trim_vulnerabilities(doc.get("vulnerabilities")),
    }


def _trim_npm(doc: dict[str, Any]) -> dict[str, Any]:
    versions = {
        version: ({"deprecated": meta.get("deprecated")} if isinstance(meta, dict) and meta.get("deprecated") else {})
        for version, meta in _dict(doc.get("versions")).items()
    }
    return {
        "name": doc.get("name"),
        "dist-tags": {"latest": _dict(doc.get("dist-tags")).get("latest")},
        "time": _dict(doc.get("time")),
        "versions": versions,
    }


def _vulnerabilities(value: Any) -> list[Vulnerability]:
    found = []
    for item in _list(value):
        if isinstance(item, dict) and _str(item.get("id")):
            found.append(
                Vulnerability(
                    id=str(item["id"]),
                    aliases=[str(a) for a in _list(item.get("aliases"))],
                    fixed_in=[str(v) for v in _list(item.get("fixed_in"))],
                    details=str(item.get("details") or ""),
                )
            )
    return found


def _npm_advisories(value: Any) -> list[NpmAdvisory]:
    found = []
    for item in _list(value):
        if isinstance(item, dict) and item.get("id") is not None:
            found.append(
                NpmAdvisory(
                    id=str(item["id"]),
                    url=_str(item.get("url")) or "",
                    title=_str(item.get("title")) or "",
                    severity=_str(item.get("severity")) or "",
                    vulnerable_versions=_str(item.get("vulnerable_versions")) or "",
                )
            )
    return found


def _parse_pypi_project(doc: dict[str, Any]) -> PypiProject:
    info = _dict(doc.get("info"))
    releases: dict[str, PypiRelease] = {}
    for version, raw_files in _dict(doc.get("releases")).items():
        files = [f for f in _list(raw_files) if isinstance(f, dict)]
        times = [t for t in (_time(f.get("upload_time_iso_8601")) for f in files) if t]
        yanked = bool(files) and all(f.get("yanked") is True for f in files)
        reasons = [r for r in (_str(f.get("yanked_reason")) for f in files) if r]
        releases[str(version)] = PypiRelease(
            version=str(version),
            files=len(files),
            uploaded_at=min(times) if times else None,
            yanked=yanked,
            yanked_reason=(reasons[0].strip() if reasons else None) if yanked else None,
        )
    return PypiProject(
        name=_str(info.get("name")) or "",
        latest=_str(info.get("version")),
        classifiers=[str(c) for c in _list(info.get("classifiers"))],
        releases=releases,
        latest_vulnerabilities=_vulnerabilities(doc.get("vulnerabilities")),
    )


def _parse_pypi_version(doc: dict[str, Any]) -> PypiVersion:
    info = _dict(doc.get("info"))
    reason = _str(info.get("yanked_reason"))
    return PypiVersion(
        name=_str(info.get("name")) or "",
        version=_str(info.get("version")) or "",
        yanked=info.get("yanked") is True,
        yanked_reason=reason.strip() if reason else None,
        vulnerabilities=_vulnerabilities(doc.get("vulnerabilities")),
    )


def _parse_npm(doc: dict[str, Any]) -> NpmPackage:
    times = _dict(doc.get("time"))
    versions = {
        str(version): NpmVersion(
            version=str(version),
            deprecated=_str(_dict(meta).get("deprecated")),
            published=_time(times.get(version)),
        )
        for version, meta in _dict(doc.get("versions")).items()
    }
    return NpmPackage(
        name=_str(doc.get("name")) or "",
        latest=_str(_dict(doc.get("dist-tags")).get("latest")),
        created=_time(times.get("created")),
        unpublished=bool(times.get("unpublished")) and not versions,
        versions=versions,
    )


def registry_client(settings: Settings) -> RegistryClient:
    """The PyPI/npm client of the Hallucination Check, configured from settings, caching under the home."""
    governance = settings.governance
    return RegistryClient(
        governance.pypi_url,
        governance.npm_url,
        timeout_s=governance.registry_timeout_s,
        cache_dir=settings.home / "cache" / "registry",
        ttl_s=governance.registry_cache_ttl_s,
    )
