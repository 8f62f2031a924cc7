"""The sandbox image can measure coverage: ``coverage_command`` runs in it and leaves a report the host parses."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker

from factory.config import SANDBOX_IMAGE
from factory.discovery.coverage import coverage_command, parse_coverage
from tests.conftest import ROOT


def test_sandbox_image_runs_the_coverage_command(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """python3 -m coverage exists in the image; the example repo's tests run under it and the report parses."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "sample-repo", repo)
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)  # the image's user is uid 1000
    command = coverage_command("python3 -m pytest -q -p no:cacheprovider", "/workspace/out/coverage.json")
    output = docker_client.containers.run(
        SANDBOX_IMAGE,
        ["sh", "-c", f"python3 -m coverage --version && ({command}); echo exit=$?"],
        volumes={str(repo): {"bind": "/workspace", "mode": "rw"}},
        working_dir="/workspace",
        network_mode="none",
        remove=True,
    ).decode()
    assert "Coverage.py, version" in output
    assert "exit=1" in output  # the example repo has one failing test: the tests' status is kept
    modules = {m.path: m for m in parse_coverage((repo / "out" / "coverage.json").read_text(), "coverage.py")}
    assert set(modules) == {"calc/__init__.py", "calc/stats.py", "tests/test_stats.py"}
    assert modules["calc/stats.py"].statements > 0
