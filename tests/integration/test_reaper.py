"""`factory sandbox reap` removes orphaned sandboxes, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
from temporalio.client import Client

from factory.models import SandboxLimits
from factory.sandbox import LABEL_WORKFLOW, DockerSandboxes
from tests.conftest import make_settings

FACTORY = str(Path(sys.executable).parent / "factory")
IMAGE = "factory-sandbox:latest"


async def test_reap_removes_sandboxes_of_closed_or_unknown_workflows_only(
    dev_client: Client, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Sandboxes whose workflow is unknown or closed are removed with their workspace; the sandbox of a running
    workflow, a container of another factory installation and an unlabelled container are left alone."""
    settings = make_settings(tmp_path)
    sandboxes = DockerSandboxes(settings.workspaces_root)
    other_factory = DockerSandboxes(tmp_path / "elsewhere" / "workspaces")
    tag = uuid.uuid4().hex[:6]
    gone, done, running = (f"ticket-REAP-{kind}-{tag}" for kind in ("gone", "done", "running"))
    await dev_client.start_workflow("TicketWorkflow", "x", id=running, task_queue=f"no-worker-{tag}")
    finished = await dev_client.start_workflow("TicketWorkflow", "x", id=done, task_queue=f"no-worker-{tag}")
    await finished.terminate("test")
    names = {}
    for workflow_id in (gone, done, running):
        _, names[workflow_id], _ = sandboxes.provision(workflow_id, workflow_id, IMAGE, SandboxLimits())
    # A finished ticket's workspace (its transcript) from 60 days ago: past the 30 days kept.
    finished_long_ago = sandboxes.workspace_for(f"ticket-REAP-old-{tag}")
    (finished_long_ago.meta / "logs").mkdir(parents=True)
    (finished_long_ago.meta / "transcript.jsonl").write_text("{}\n")
    _age(finished_long_ago.root, days=60)
    _, foreign, _ = other_factory.provision(gone, gone, IMAGE, SandboxLimits())
    unlabelled = docker_client.containers.run(
        IMAGE, ["sleep", "300"], detach=True, labels={LABEL_WORKFLOW: gone}, name=f"not-ours-{tag}"
    )
    try:
        proc = subprocess.run(
            [
                FACTORY,
                "--config",
                str(tmp_path / "factory.toml"),
                "--address",
                dev_client.service_client.config.target_host,
                "sandbox",
                "reap",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "2 orphaned sandbox(es) removed" in proc.stdout
        left = {c.name for c in docker_client.containers.list(all=True)}
        assert names[gone] not in left and names[done] not in left
        assert names[running] in left and foreign in left and f"not-ours-{tag}" in left
        assert not sandboxes.workspace_for(gone).repo.exists()
        assert sandboxes.workspace_for(running).repo.exists()
        assert "1 old workspace(s) removed" in proc.stdout
        assert not finished_long_ago.root.exists()
        assert sandboxes.workspace_for(done).meta.exists()  # reaped today: its transcript is kept
    finally:
        for name in names.values():
            sandboxes.destroy(name)
        other_factory.destroy(foreign)
        unlabelled.remove(force=True)
        await dev_client.get_workflow_handle(running).terminate("test done")


def _age(path: Path, *, days: float) -> None:
    """Date ``path`` and everything under it ``days`` back."""
    then = time.time() - days * 86400
    for directory, subdirectories, files in os.walk(path, topdown=False):
        for name in [*files, *subdirectories]:
            os.utime(os.path.join(directory, name), (then, then), follow_symlinks=False)
        os.utime(directory, (then, then))


def test_only_old_unused_workspaces_of_this_installation_are_pruned(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """A workspace is pruned when nothing wrote to its meta/ for the keeping time and no sandbox uses it;
    a recent write, a live sandbox or another installation's name keeps it."""
    sandboxes = DockerSandboxes(tmp_path / "workspaces")
    other = DockerSandboxes(tmp_path / "elsewhere")
    tag = uuid.uuid4().hex[:6]
    old, touched, alive = (
        sandboxes.workspace_for(f"ticket-PRUNE-{kind}-{tag}") for kind in ("old", "touched", "alive")
    )
    _, alive_name, _ = sandboxes.provision(
        f"ticket-PRUNE-alive-{tag}", f"ticket-PRUNE-alive-{tag}", IMAGE, SandboxLimits()
    )
    foreign = sandboxes.workspaces_root / other.workspace_for(f"ticket-PRUNE-old-{tag}").root.name
    try:
        for workspace in (old, touched, alive):
            (workspace.meta / "logs").mkdir(parents=True, exist_ok=True)
            (workspace.meta / "logs" / "tests.log").write_text("ok\n")
        (foreign / "meta").mkdir(parents=True)
        for path in (old.root, touched.root, alive.root, foreign):
            _age(path, days=40)
        (touched.meta / "logs" / "tests.log").write_text("written again today\n")
        _age(touched.root, days=40)
        os.utime(touched.meta / "logs" / "tests.log")  # only the newest file is recent

        assert sandboxes.prune_workspaces(30 * 86400, dry_run=True) == [old.root.name]
        assert old.root.exists()
        assert sandboxes.prune_workspaces(30 * 86400) == [old.root.name]
        assert not old.root.exists()
        assert touched.root.exists() and alive.root.exists() and foreign.exists()
        assert sandboxes.prune_workspaces(90 * 86400) == []
    finally:
        sandboxes.destroy(alive_name)
