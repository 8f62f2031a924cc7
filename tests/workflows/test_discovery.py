"""DiscoveryWorkflow on the time-skipping server: real sandbox for coverage, real git, a local registry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from factory.config import Settings
from factory.models import READY_LABEL, DiscoveryAction, DiscoveryRequest, DiscoveryResult, DiscoverySource
from factory.trackers import LocalTracker
from tests.conftest import FIXTURES, make_settings, managed_containers, settled
from tests.unit.test_hallucination import RegistryServer
from tests.workflows.test_ticket_workflow import running_workers
from workflows.discovery import DISCOVERY_QUEUE, DiscoveryWorkflow

SHOP = FIXTURES / "discovery" / "shop"
LOGS = FIXTURES / "discovery" / "logs"


def shop_settings(tmp_path: Path, registry: RegistryServer) -> Settings:
    settings = make_settings(
        tmp_path,
        f"""
[repos.shop]
seed_from = "{SHOP}"
test_command = "python3 -m pytest -q -p no:cacheprovider"
log_sources = ["{LOGS}"]
[coverage]
min_statements = 10
""",
    )
    governance = settings.governance.model_copy(update={"pypi_url": registry.url, "npm_url": f"{registry.url}/npm"})
    return settings.model_copy(update={"governance": governance})


async def discover(env: WorkflowEnvironment, settings: Settings, workflow_id: str) -> DiscoveryResult:
    result: DiscoveryResult = await env.client.execute_workflow(
        DiscoveryWorkflow.run,
        DiscoveryRequest(repos=["shop"]),
        id=workflow_id,
        task_queue=DISCOVERY_QUEUE,
        result_type=DiscoveryResult,
    )
    return result


async def test_discovery_files_one_ticket_per_problem_and_updates_them_on_the_next_run(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Two runs over the same repo: the first creates a log, a coverage and a dependency ticket; the second
    updates those same tickets (counted as a second sighting) and creates none; no sandbox is left."""
    registry = RegistryServer()
    try:
        settings = shop_settings(tmp_path, registry)
        async with running_workers(time_skipping_env.client, settings):
            first = await discover(time_skipping_env, settings, "discovery-test-1")
            tracker = LocalTracker(settings.tickets_root)
            after_first = {t.id: t for t in tracker.list()}
            second = await discover(time_skipping_env, settings, "discovery-test-2")
    finally:
        registry.stop()

    assert first.warnings == [], first.warnings
    assert {r.action for r in first.records} == {DiscoveryAction.CREATED}
    assert {r.action for r in second.records} == {DiscoveryAction.UPDATED}
    assert sorted(r.ticket_id for r in first.records) == sorted(r.ticket_id for r in second.records)

    tickets = {t.id: t for t in LocalTracker(settings.tickets_root).list(label=READY_LABEL)}
    assert tickets.keys() == after_first.keys()
    by_source = {t.ticket.source: t for t in tickets.values()}
    assert set(by_source) == {"log-miner", "coverage-analyst", "dependency-watchdog"}

    log_ticket = by_source["log-miner"]
    assert log_ticket.ticket.type == "bug"
    assert "ZeroDivisionError" in log_ticket.ticket.context.error_logs
    assert any(path.endswith("shop/pricing.py") for path in log_ticket.ticket.context.filepaths)
    # The same log files read twice: the count is the window's (not doubled), the sightings are two.
    assert log_ticket.occurrences == after_first[log_ticket.id].occurrences == 12
    assert log_ticket.sightings == 2

    coverage_ticket = by_source["coverage-analyst"]
    assert coverage_ticket.ticket.type == "chore"
    assert coverage_ticket.ticket.context.filepaths == ["shop/inventory.py"]

    dep_ticket = by_source["dependency-watchdog"]
    criteria = " ".join(dep_ticket.ticket.acceptance_criteria)
    # 2.32.0 fixes the advisory but it and 2.32.1 are yanked in the registry: the safe version is 2.32.3.
    assert "requests" in criteria and "GHSA-9wx4-h78v-vm56" in criteria and "2.32.3" in criteria

    assert first.examined[f"shop/{DiscoverySource.LOGS.value}"] >= 12
    assert managed_containers(docker_client, "discovery-test-1") == []
    assert managed_containers(docker_client, "discovery-test-2") == []


async def test_an_unreachable_registry_is_a_warning_and_files_no_dependency_ticket(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """With the registry down the watchdog guesses nothing: a warning names the problem, no dep ticket exists."""
    registry = RegistryServer()
    registry.stop()  # the port is now closed: connection refused
    settings = shop_settings(tmp_path, registry)
    async with running_workers(time_skipping_env.client, settings):
        result: DiscoveryResult = await time_skipping_env.client.execute_workflow(
            DiscoveryWorkflow.run,
            DiscoveryRequest(repos=["shop"], only=[DiscoverySource.DEPS]),
            id="discovery-test-offline",
            task_queue=DISCOVERY_QUEUE,
            result_type=DiscoveryResult,
        )

    assert result.records == []
    assert result.warnings and any("requests" in w or "registry" in w.lower() for w in result.warnings)
    assert LocalTracker(settings.tickets_root).list() == []


def slow_shop_settings(tmp_path: Path, registry: RegistryServer, test_timeout_s: int) -> Settings:
    settings = shop_settings(tmp_path, registry)
    shop = settings.repos["shop"].model_copy(update={"install_command": "sleep 45"})
    limits = settings.limits.model_copy(update={"test_timeout_s": test_timeout_s})
    return settings.model_copy(update={"repos": {**settings.repos, "shop": shop}, "limits": limits})


async def test_a_coverage_run_past_its_time_limit_is_a_warning_and_the_other_sources_still_file(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """A sandbox step hanging past the limit: the coverage source warns, log and dependency tickets are still filed."""
    registry = RegistryServer()
    try:
        settings = slow_shop_settings(tmp_path, registry, test_timeout_s=3)
        async with running_workers(time_skipping_env.client, settings):
            result = await discover(time_skipping_env, settings, "discovery-test-slow")
    finally:
        registry.stop()

    assert any("install in the sandbox failed (timed out after 3s)" in w for w in result.warnings), result.warnings
    sources = {t.ticket.source for t in LocalTracker(settings.tickets_root).list()}
    assert sources == {"log-miner", "dependency-watchdog"}
    assert managed_containers(docker_client, "discovery-test-slow") == []


async def test_cancelling_a_discovery_run_stops_it_and_destroys_its_sandbox(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Cancelled while the coverage sandbox works: the run ends cancelled, not with a warning; no sandbox left."""
    registry = RegistryServer()
    try:
        settings = slow_shop_settings(tmp_path, registry, test_timeout_s=120)
        client = time_skipping_env.client
        async with running_workers(client, settings):
            handle = await client.start_workflow(
                DiscoveryWorkflow.run,
                DiscoveryRequest(repos=["shop"], only=[DiscoverySource.COVERAGE, DiscoverySource.DEPS]),
                id="discovery-test-cancel",
                task_queue=DISCOVERY_QUEUE,
            )
            for _ in range(1200):  # up to two minutes on a loaded machine
                if managed_containers(docker_client, "discovery-test-cancel"):
                    break
                await asyncio.sleep(0.1)
            assert managed_containers(docker_client, "discovery-test-cancel"), "the coverage sandbox never started"
            await asyncio.sleep(1)
            await handle.cancel()
            with pytest.raises(WorkflowFailureError) as failure:
                await settled(handle)
    finally:
        registry.stop()

    assert isinstance(failure.value.cause, CancelledError)
    assert LocalTracker(settings.tickets_root).list() == []  # the dependency audit after it never ran
    assert managed_containers(docker_client, "discovery-test-cancel") == []
