"""`factory sandbox reap` removes orphaned sandboxes, and only those."""

from __future__ import annotations

import subprocess
import sys
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
    finally:
        for name in names.values():
            sandboxes.destroy(name)
        other_factory.destroy(foreign)
        unlabelled.remove(force=True)
        await dev_client.get_workflow_handle(running).terminate("test done")
