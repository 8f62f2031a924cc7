"""How a night shift scales: one ticket alone vs a 20-ticket night at max_concurrent 5.

Runs on a fresh dev server with in-process workers, the offline scripted model, real
Docker sandboxes and real git, in one temporary factory: first a night with one
approved copy of the example ticket, then a night with N copies. Meanwhile a thread
follows Docker's events for this installation's sandboxes (containers labelled
``factory.instance=<installation>`` and ``factory.ticket``) and keeps the peak number alive, and
/proc/stat says how busy the CPUs were (a night at 100 % is CPU-bound: the ratio then
depends on the cores, not on the scheduling).

    uv run python bench/night_shift.py [--tickets 20] [--max-concurrent 5] [--model-latency 0]

``--model-latency S`` adds S seconds before every scripted model answer (a real model
takes seconds per call; the scripted one answers in milliseconds).

Targets: the N-ticket night within 4.5x the one-ticket wall time (for N=20 at 5);
never more sandboxes alive than max_concurrent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import yaml  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from factory.config import Settings  # noqa: E402
from factory.models import READY_LABEL, NightReport, NightShiftRequest, NightTicketState, parse_ticket  # noqa: E402
from factory.sandbox import LABEL_INSTANCE, LABEL_TICKET, DockerSandboxes  # noqa: E402
from factory.trackers import LocalTracker  # noqa: E402
from tests.conftest import EXAMPLE_PLAYBOOK, EXAMPLE_TICKET, make_settings  # noqa: E402
from tests.workflows.test_ticket_workflow import running_workers  # noqa: E402
from workflows.night_shift import NightShiftWorkflow  # noqa: E402
from workflows.search_attributes import ALL_KEYS  # noqa: E402


class SandboxSampler:
    """Counts this installation's live sandboxes from Docker's event stream; keeps the peak.

    Every container start and death of a sandbox (label ``factory.instance=<installation>``
    and ``factory.ticket``) arrives as an event, so a peak between two polls cannot be
    missed, and the counting costs next to no CPU. Also measures how busy the machine's
    CPUs were meanwhile (from /proc/stat), which says whether the run was CPU-bound.
    """

    def __init__(self, settings: Settings) -> None:
        self.instance = DockerSandboxes(settings.workspaces_root).instance_id
        self.client = docker.from_env()
        self.peak = 0
        self.events = 0
        self.cpu_busy = 0.0
        self._alive: set[str] = set()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = _cpu_times()

    def _run(self) -> None:
        for event in self._stream:
            action = event.get("Action") or event.get("status")
            container = event.get("id") or ""
            if action == "start":
                self._alive.add(container)
            elif action == "die":
                self._alive.discard(container)
            else:
                continue
            self.events += 1
            self.peak = max(self.peak, len(self._alive))

    def __enter__(self) -> SandboxSampler:
        labels = [f"{LABEL_INSTANCE}={self.instance}", LABEL_TICKET]
        self._stream = self.client.events(
            decode=True, filters={"type": "container", "event": ["start", "die"], "label": labels}
        )
        self._cpu_start = _cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        busy, total = (end - start for end, start in zip(_cpu_times(), self._cpu_start, strict=True))
        self.cpu_busy = busy / total if total else 0.0
        self._stream.close()
        self._thread.join(timeout=5)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def file_tickets(settings: Settings, playbooks: Path, count: int, latency_s: float) -> list[str]:
    """``count`` approved copies of the example ticket, each with its playbook."""
    example = parse_ticket(EXAMPLE_TICKET.read_text())
    playbook = yaml.safe_load(EXAMPLE_PLAYBOOK.read_text())
    for step in playbook["steps"]:
        step["delay_s"] = latency_s
    tracker = LocalTracker(settings.tickets_root)
    at = datetime.now(UTC)
    ids = []
    for index in range(count):
        ticket_id = f"NIGHT-{uuid.uuid4().hex[:6]}"
        (playbooks / f"{ticket_id}.yaml").write_text(yaml.safe_dump(playbook))
        tracker.create(example.model_copy(update={"id": ticket_id, "labels": [READY_LABEL]}))
        tracker.approve(ticket_id, "bench", at + timedelta(milliseconds=index))
        ids.append(ticket_id)
    return ids


async def run_night(client: Client, max_concurrent: int) -> tuple[float, NightReport]:
    started = time.monotonic()
    report: NightReport = await client.execute_workflow(
        NightShiftWorkflow.run,
        NightShiftRequest(max_concurrent=max_concurrent),
        id=f"night-shift-bench-{uuid.uuid4().hex[:6]}",
        task_queue="execution",
        result_type=NightReport,
    )
    wall = time.monotonic() - started
    failed = [o for o in report.outcomes if o.state != NightTicketState.READY_FOR_MERGE]
    if failed:
        raise SystemExit(f"{len(failed)} ticket(s) did not finish: {failed[0].ticket_id} {failed[0].reason}")
    return wall, report


async def bench(tickets: int, max_concurrent: int, latency_s: float, workdir: Path) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(ALL_KEYS),
    )
    playbooks = workdir / "playbooks"
    playbooks.mkdir(parents=True, exist_ok=True)
    extra = f'[night_shift]\nmax_concurrent = {max_concurrent}\ncost_cap_usd = "none"\n'
    settings = make_settings(workdir, extra, playbooks=playbooks)
    try:
        async with running_workers(env.client, settings):
            # A warm-up night, not timed: the first model call imports the model client (seconds),
            # which a worker that has served one ticket has already paid.
            file_tickets(settings, playbooks, 1, latency_s)
            await run_night(env.client, max_concurrent)
            file_tickets(settings, playbooks, 1, latency_s)
            with SandboxSampler(settings) as alone:
                one_wall, _ = await run_night(env.client, max_concurrent)
            file_tickets(settings, playbooks, tickets, latency_s)
            with SandboxSampler(settings) as sampler:
                night_wall, report = await run_night(env.client, max_concurrent)
    finally:
        await env.shutdown()
    durations = [o.duration_s for o in report.outcomes if o.duration_s is not None]
    ratio = night_wall / one_wall
    print(f"scripted model, model latency {latency_s:g} s per step, governance off, {max_concurrent} at a time")
    cores = os.cpu_count() or 1
    print(
        f"one ticket alone (a night of 1):       {one_wall:7.1f} s   (peak sandboxes {alone.peak}; "
        f"CPUs {alone.cpu_busy:.0%} busy of {cores})"
    )
    print(f"{tickets}-ticket night:                      {night_wall:7.1f} s   (CPUs {sampler.cpu_busy:.0%} busy)")
    ideal = tickets / max_concurrent
    print(f"ratio:                                 {ratio:7.2f} x   (target <= 4.5 x; ideal {ideal:g} x)")
    print(
        f"ticket duration in the night:          median {statistics.median(durations):.1f} s, "
        f"max {max(durations):.1f} s"
    )
    print(
        f"peak sandboxes alive:                  {sampler.peak}   (limit {max_concurrent}; "
        f"{sampler.events} Docker start/die events); the night's own peak of running tickets: {report.peak_running}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=5)
    parser.add_argument("--model-latency", type=float, default=0.0, help="seconds before each scripted answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-night-") as tmp:
        asyncio.run(bench(args.tickets, args.max_concurrent, args.model_latency, Path(tmp)))


if __name__ == "__main__":
    main()
