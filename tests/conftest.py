"""Shared fixtures: real git repos, real Docker sandboxes, real Temporal servers.

Tests that need Docker or a Temporal server run for real; if the engine or the
binaries are missing the fixture fails loudly rather than skipping.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from factory.config import Settings, load_settings
from factory.demo import seed_local_forge
from factory.sandbox import LABEL_MANAGED
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLE_TICKET = ROOT / "examples" / "tickets" / "CALC-1.json"


def write_config(directory: Path, extra: str = "", *, playbooks: Path | None = None, governance: bool = False) -> Path:
    """A factory.toml for a test: state under ``directory``, the example repo on a local forge.

    Governance (review rounds) is off unless asked for, so execution tests see only execution.
    """
    playbooks = playbooks or (ROOT / "examples" / "playbooks")
    path = directory / "factory.toml"
    path.write_text(
        f"""
home = "{directory / ".factory"}"
[models]
coder = "scripted"
playbooks_dir = "{playbooks}"
scripted_call_log = "{directory / "model-calls.jsonl"}"
[governance]
enabled = {"true" if governance else "false"}
[limits]
heartbeat_timeout_s = 5
command_timeout_s = 60
test_timeout_s = 120
[repos.calculator]
seed_from = "{ROOT / "examples" / "sample-repo"}"
test_command = "python3 -m pytest -q -p no:cacheprovider"
{extra}
"""
    )
    return path


def make_settings(
    directory: Path, extra: str = "", *, playbooks: Path | None = None, governance: bool = False
) -> Settings:
    settings = load_settings(write_config(directory, extra, playbooks=playbooks, governance=governance))
    seed_local_forge(settings)
    return settings


def model_calls(settings: Settings) -> list[dict[str, Any]]:
    log = settings.models.scripted_call_log
    if log is None or not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()  # fails the test if the engine is not running: these tests must run in CI
    yield client


def managed_containers(client: docker.DockerClient, workflow_id: str | None = None) -> list[Any]:
    label = f"factory.workflow={workflow_id}" if workflow_id else f"{LABEL_MANAGED}=true"
    return list(client.containers.list(all=True, filters={"label": label}))


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    yield env
    await env.shutdown()


async def start_dev_server() -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=list(ALL_KEYS),
    )


@pytest_asyncio.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def own_dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server for one test alone: no other test's workflows wait on its task queues.

    For cancellation tests: the time-skipping test server wedges a workflow that cancels an
    activity in the very task where that activity completes ("ACTIVITY_UNKNOWN for
    scheduledEventId", temporalio/sdk-java#2391); the real server accepts it.
    """
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
def dev_client(dev_server: WorkflowEnvironment) -> Client:
    return dev_server.client


EXAMPLE_PLAYBOOK = ROOT / "examples" / "playbooks" / "CALC-1.yaml"


def copy_playbook(name: str, ticket_id: str, directory: Path) -> Path:
    """Install a playbook (a fixture name, "example" or "example.review") as the playbook of ``ticket_id``.

    Reviewer playbooks (``review-*`` fixtures, ``example.review``) become ``<ticket_id>.review.yaml``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".review" if name.startswith("review") or name.endswith(".review") else ""
    target = directory / f"{ticket_id}{suffix}.yaml"
    if name.startswith("example"):
        source = EXAMPLE_PLAYBOOK.with_name(f"CALC-1{suffix}.yaml")
    else:
        source = FIXTURES / "playbooks" / f"{name}.yaml"
    shutil.copy(source, target)
    return target


async def settled(handle: WorkflowHandle[Any, Any], timeout_s: float = 300) -> Any:
    """The workflow's result (or its failure), waiting at most ``timeout_s``.

    The time-skipping test server ends a long poll for a result after about 20 s without an
    answer ("No completion event found"): ask again. A workflow that never ends fails the test
    here, inside it, so its workers are shut down and the shared test server stays usable.
    """
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    return await handle.result()
                except RuntimeError as exc:
                    if "No completion event" not in str(exc):
                        raise
    except TimeoutError:
        raise AssertionError(f"workflow {handle.id} did not end within {timeout_s:.0f} s") from None
