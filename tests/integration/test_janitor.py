"""JanitorWorkflow end to end: real sandboxes, a real egress proxy, a local package registry, real git.

The registry is made here: wheels, npm tarballs, a PEP 503 index, PyPI JSON documents and
npm packuments, built at test time and served by ``python3 -m http.server`` in a container
on the proxy's egress network (which this test creates). Sandboxes reach it only through
the allow-list proxy, by name; the host's Hallucination Check reaches it at its address on
that network. ``libfoo`` 1.1.0 is a compatible update; ``libbar`` 2.0.0 renames ``add``, so
the sample projects' tests fail with it: one update is committed, the other reverted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from factory.config import SANDBOX_IMAGE, Settings
from factory.forge import LocalForge
from factory.forge.gitops import remote_branch_sha
from factory.janitor import janitor_head
from factory.models import JanitorRequest, JanitorResult
from factory.sandbox import DockerSandboxes
from tests.conftest import FIXTURES, make_settings, managed_containers, settled
from worker import build_workers
from workflows.janitor import JanitorWorkflow

PORT = 8000
UPLOADED = "2020-01-01T00:00:00Z"
BRANCH = "chore/update-deps"

# name -> version -> (Python module source, JavaScript module source)
PACKAGES: dict[str, dict[str, tuple[str, str]]] = {
    "libfoo": {
        "1.0.0": ("def greet():\n    return 'hello'\n", 'exports.greet = () => "hello";\n'),
        "1.1.0": ("def greet():\n    return 'hello'\n", 'exports.greet = () => "hello";\n'),
    },
    "libbar": {
        "1.0.0": ("def add(a, b):\n    return a + b\n", "exports.add = (a, b) => a + b;\n"),
        "2.0.0": ("def plus(a, b):\n    return a + b\n", "exports.plus = (a, b) => a + b;\n"),
    },
}


def _wheel(name: str, version: str, source: str) -> bytes:
    files = {
        f"{name}/__init__.py": source.encode(),
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


def _tarball(name: str, version: str, source: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in {
            "package/package.json": json.dumps({"name": name, "version": version, "main": "index.js"}).encode(),
            "package/index.js": source.encode(),
        }.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_registry(root: Path, host: str) -> None:
    """A PEP 503 index, PyPI JSON documents and npm packuments for PACKAGES, served from ``root``."""
    base = f"http://{host}:{PORT}"
    (root / "files").mkdir(parents=True)
    for name, versions in PACKAGES.items():
        latest = max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
        links, releases, npm_versions = [], {}, {}
        for version, (python_source, js_source) in versions.items():
            wheel = f"{name}-{version}-py3-none-any.whl"
            data = _wheel(name, version, python_source)
            (root / "files" / wheel).write_bytes(data)
            links.append(f'<a href="../../files/{wheel}#sha256={hashlib.sha256(data).hexdigest()}">{wheel}</a>')
            releases[version] = [{"filename": wheel, "upload_time_iso_8601": UPLOADED, "yanked": False}]
            (root / "pypi" / name / version).mkdir(parents=True)
            (root / "pypi" / name / version / "json").write_text(
                json.dumps({"info": {"name": name, "version": version, "yanked": False}, "vulnerabilities": []})
            )
            tgz = f"{name}-{version}.tgz"
            (root / "files" / tgz).write_bytes(_tarball(name, version, js_source))
            npm_versions[version] = {"name": name, "version": version, "dist": {"tarball": f"{base}/files/{tgz}"}}
        (root / "simple" / name).mkdir(parents=True)
        (root / "simple" / name / "index.html").write_text(f"<html><body>{''.join(links)}</body></html>\n")
        (root / "pypi" / name / "json").write_text(
            json.dumps(
                {
                    "info": {"name": name, "version": latest, "classifiers": []},
                    "releases": releases,
                    "vulnerabilities": [],
                }
            )
        )
        (root / name).write_text(
            json.dumps(
                {
                    "name": name,
                    "dist-tags": {"latest": latest},
                    "time": {"created": UPLOADED, **dict.fromkeys(versions, UPLOADED)},
                    "versions": npm_versions,
                }
            )
        )
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass
class Registry:
    host: str
    address: str


@pytest.fixture
def registry(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[tuple[Registry, Path]]:
    """The registry container on the egress network of the test's own factory installation."""
    home = tmp_path / "factory"
    home.mkdir()
    out_network = DockerSandboxes((home / ".factory" / "workspaces").resolve()).egress.out_network_name
    host = f"registry-{uuid.uuid4().hex[:6]}"
    files = tmp_path / "registry"
    build_registry(files, host)
    label = {"factory.test": host}
    network = docker_client.networks.create(out_network, driver="bridge", labels=label)
    container = None
    try:
        container = docker_client.containers.run(
            SANDBOX_IMAGE,
            ["python3", "-m", "http.server", str(PORT), "--directory", "/srv"],
            name=host,
            detach=True,
            network=out_network,
            labels=label,
            cap_drop=["ALL"],
            read_only=True,
            volumes={str(files): {"bind": "/srv", "mode": "ro"}},
        )
        deadline = time.monotonic() + 20
        while container.exec_run(["bash", "-c", f": </dev/tcp/127.0.0.1/{PORT}"]).exit_code != 0:
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.1)
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][out_network]["IPAddress"]
        yield Registry(host, f"http://{address}:{PORT}"), home
    finally:
        if container is not None:
            container.remove(force=True)
        # The factory removes its proxies on destroy; whatever is left on the network goes with it.
        network.reload()
        for attached in network.attrs.get("Containers") or {}:
            docker_client.containers.get(attached).remove(force=True)
        network.remove()


def janitor_settings(home: Path, registry: Registry, up_to_date: Path) -> Settings:
    allow = f'egress_allow = ["{registry.host}"]'
    extra = f"""
[janitor]
pip_index_url = "http://{registry.host}:{PORT}/simple"
npm_registry = "http://{registry.host}:{PORT}"
[repos.pyproj]
seed_from = "{FIXTURES / "janitor" / "python-project"}"
test_command = "python3 -m pytest -q -p no:cacheprovider"
{allow}
[repos.npmproj]
seed_from = "{FIXTURES / "janitor" / "npm-project"}"
test_command = "node test.js"
{allow}
[repos.current]
seed_from = "{up_to_date}"
test_command = "python3 -m pytest -q -p no:cacheprovider"
{allow}
"""
    settings = make_settings(home, extra, governance=True)
    settings.governance.pypi_url = registry.address
    settings.governance.npm_url = registry.address
    return settings


@asynccontextmanager
async def running_workers(client: Client, settings: Settings) -> AsyncIterator[list[Worker]]:
    workers = build_workers(client, settings, ["execution"])
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield workers
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers))
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_janitor(client: Client, repos: list[str]) -> JanitorResult:
    handle = await client.start_workflow(
        JanitorWorkflow.run, JanitorRequest(repos=repos), id="janitor-all", task_queue="execution"
    )
    result: JanitorResult = await settled(handle)
    return result


def show(settings: Settings, repo: str, path: str) -> str:
    """A file at the tip of the update branch, read from the forge's bare repository."""
    git_dir = settings.forge_root / f"{repo}.git"
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{BRANCH}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def by_repo(result: JanitorResult) -> dict[str, Any]:
    return {outcome.repo: outcome for outcome in result.repos}


async def test_janitor_commits_the_passing_update_reverts_the_breaking_one_and_updates_its_pull_request(
    time_skipping_env: WorkflowEnvironment,
    tmp_path: Path,
    registry: tuple[Registry, Path],
    docker_client: docker.DockerClient,
) -> None:
    """Per project (pip and npm): libfoo's update is committed, libbar's breaks the test and is skipped
    with the failing output summarised, one PR holds the result (naming the Python project's uv.lock as
    not regenerated); an up-to-date repo gets no branch and no PR; a second run while the PR is open
    updates that PR instead of opening another."""
    server, home = registry
    up_to_date = tmp_path / "up-to-date"
    shutil.copytree(FIXTURES / "janitor" / "python-project", up_to_date)
    (up_to_date / "requirements.txt").write_text("libfoo==1.1.0\n")
    (up_to_date / "app.py").write_text("import libfoo\n\n\ndef greeting() -> str:\n    return libfoo.greet()\n")
    (up_to_date / "test_app.py").write_text(
        "from app import greeting\n\n\ndef test_greeting() -> None:\n    assert greeting() == 'hello'\n"
    )
    settings = janitor_settings(home, server, up_to_date)
    client = time_skipping_env.client
    forge = LocalForge(settings.forge_root)

    async with running_workers(client, settings):
        first = by_repo(await run_janitor(client, ["pyproj", "npmproj", "current"]))

        for repo, manifest in (("pyproj", "requirements.txt"), ("npmproj", "package.json")):
            outcome = first[repo]
            assert outcome.outcome == "pull_request", outcome.reason
            assert [(u.package.name, u.committed) for u in outcome.updates] == [("libfoo", True), ("libbar", False)]
            skipped = outcome.updates[1]
            assert skipped.reason is not None and skipped.reason.startswith("tests failed")
            assert skipped.summary and ("add" in skipped.summary or "Error" in skipped.summary)
            text = show(settings, repo, manifest)
            assert ("libfoo==1.1.0" in text) if repo == "pyproj" else ('"libfoo": "1.1.0"' in text)
            assert ("libbar==1.0.0" in text) if repo == "pyproj" else ('"libbar": "1.0.0"' in text)
            prs = forge.list_pull_requests(repo)
            assert [(pr.head, pr.state) for pr in prs] == [(BRANCH, "open")]
            body = prs[0].body
            assert "| libfoo | 1.0.0 | 1.1.0 |" in body
            assert "| libbar | 1.0.0 | 2.0.0 | tests failed" in body
            assert "Hallucination Check" in body
            # The Python project's uv.lock is left as it was: the PR says so and how to regenerate it.
            assert ("run `uv lock` on this branch" in body) == (repo == "pyproj")
            assert janitor_head(body) == remote_branch_sha(str(settings.forge_root / f"{repo}.git"), BRANCH)

        assert first["current"].outcome == "nothing_to_update", first["current"].reason
        assert forge.list_pull_requests("current") == []
        assert remote_branch_sha(str(settings.forge_root / "current.git"), BRANCH) is None

        first_head = janitor_head(forge.list_pull_requests("pyproj")[0].body)
        second = by_repo(await run_janitor(client, ["pyproj"]))

    outcome = second["pyproj"]
    assert outcome.outcome == "pull_request", outcome.reason
    assert outcome.pull_request is not None and not outcome.pull_request.created
    prs = forge.list_pull_requests("pyproj")
    assert len(prs) == 1 and prs[0].number == first["pyproj"].pull_request.number
    new_head = janitor_head(prs[0].body)
    assert new_head == remote_branch_sha(str(settings.forge_root / "pyproj.git"), BRANCH)
    assert new_head is not None and first_head is not None
    assert "libfoo==1.1.0" in show(settings, "pyproj", "requirements.txt")
    assert managed_containers(docker_client, "janitor-all") == []
