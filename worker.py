"""Runs the factory's workers: `python worker.py [--queue NAME]...` (or `factory worker`).

Queues: ``execution`` (ticket workflows and the activities any host can run),
``execution@<host>`` (this host's sandboxes: the workspace lives here, so every
sandbox activity of a ticket is routed to the host that provisioned it) and
``governance`` (review workflows and their checks) and ``discovery`` (the
discovery loop: log mining, dependency audit, filing tickets in the tracker).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.discovery import DiscoveryActivities
from activities.janitor import JanitorActivities
from activities.night_shift import NightShiftActivities
from activities.review import GovernanceActivities
from activities.ticket import TicketActivities, host_queue
from factory.config import Settings, load_settings
from factory.errors import FactoryError
from factory.llm.client import log_scripted_calls_to
from factory.telemetry import configure_logging
from workflows.discovery import DISCOVERY_QUEUE, DiscoveryWorkflow
from workflows.janitor import JanitorWorkflow
from workflows.night_shift import NightShiftWorkflow
from workflows.review import GOVERNANCE_QUEUE, ReviewWorkflow
from workflows.ticket import TicketWorkflow

__all__ = ["QUEUES", "build_workers", "run_forever", "run_workers"]

QUEUES = ("execution", "governance", "discovery")
log = structlog.get_logger()


def build_workers(client: Client, settings: Settings, queues: list[str] | None = None) -> list[Worker]:
    wanted = list(queues or QUEUES)
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown:
        raise FactoryError(f"unknown queue(s) {', '.join(unknown)}: this worker serves {', '.join(QUEUES)}")
    log_scripted_calls_to(settings.models.scripted_call_log)
    activities = TicketActivities(settings)
    workers = []
    if "execution" in wanted:
        night_shift = NightShiftActivities(settings)
        janitor = JanitorActivities(settings, activities.sandboxes)
        workers.append(
            Worker(
                client,
                task_queue="execution",
                workflows=[TicketWorkflow, NightShiftWorkflow, JanitorWorkflow],
                activities=[*activities.all(), *night_shift.all(), *janitor.all()],
            )
        )
        # This host's sandboxes: every activity that reads or writes a workspace runs here.
        discovery = DiscoveryActivities(settings)
        workers.append(
            Worker(
                client,
                task_queue=host_queue("execution", settings.host_name),
                activities=[*activities.all(), discovery.read_coverage, *janitor.all()],
            )
        )
    if GOVERNANCE_QUEUE in wanted:
        governance = GovernanceActivities(settings)
        workers.append(
            Worker(client, task_queue=GOVERNANCE_QUEUE, workflows=[ReviewWorkflow], activities=governance.all())
        )
    if DISCOVERY_QUEUE in wanted:
        discovery = DiscoveryActivities(settings)
        workers.append(
            Worker(client, task_queue=DISCOVERY_QUEUE, workflows=[DiscoveryWorkflow], activities=discovery.all())
        )
    return workers


async def run_workers(settings: Settings, queues: list[str] | None = None) -> None:
    from starter import connect, prune_old_workspaces, reap_orphans

    client = await connect(settings)
    if "execution" in (queues or QUEUES):
        # The janitor's first step on every start: a worker that died may have left sandboxes behind,
        # and finished tickets' workspaces past their keeping time go.
        try:
            reaped = await reap_orphans(client, settings)
            reaped += await asyncio.to_thread(prune_old_workspaces, settings)
        except Exception as exc:  # noqa: BLE001 - a failed clean-up must not keep the workers from starting
            log.warning("orphan_reap_failed", error=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        else:
            if reaped:
                log.info("orphans_reaped", removed=reaped)
    workers = build_workers(client, settings, queues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("workers_started", queues=[w.task_queue for w in workers], address=settings.temporal.address)
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    log.info("workers_stopping")
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*tasks, return_exceptions=True)


def run_forever(settings: Settings, queues: list[str] | None = None) -> None:
    configure_logging()
    asyncio.run(run_workers(settings, queues))


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Software Factory's workers.")
    parser.add_argument("--config", type=Path, default=None, help="factory.toml to use")
    parser.add_argument("--queue", action="append", default=None, help=f"queue to serve: {', '.join(QUEUES)}")
    args = parser.parse_args()
    from starter import exit_process

    try:
        run_forever(load_settings(args.config), args.queue)
    except FactoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        exit_process(1)
    exit_process(0)


if __name__ == "__main__":
    main()
