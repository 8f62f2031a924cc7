"""Where a ticket's time goes, and what the factory itself adds.

Runs N copies of the example ticket one after another on a fresh dev server with
in-process workers, the offline scripted model, real Docker sandboxes and real
git, and prints per ticket: submit→done wall time, time inside model-call
activities, sandbox commands, git (clone + push), sandbox provision/destroy,
other activities, and the rest: orchestration overhead (Temporal scheduling,
history, polling). Then sandbox provision time next to a bare
`docker run --rm IMAGE true` of the same image, measured in the same run.

    uv run python bench/ticket_overhead.py [--tickets 5] [--provisions 10]

Targets: overhead ≤ 1 s per ticket; provision ≤ 2× bare docker run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from factory.models import SandboxLimits, TicketResult, TicketState, parse_ticket  # noqa: E402
from factory.runs import resolve_ticket_run  # noqa: E402
from factory.sandbox import DockerSandboxes  # noqa: E402
from starter import submit_ticket, wait_for_ticket  # noqa: E402
from tests.conftest import EXAMPLE_TICKET, copy_playbook, make_settings  # noqa: E402
from tests.workflows.test_ticket_workflow import running_workers  # noqa: E402
from workflows.search_attributes import ALL_KEYS  # noqa: E402

KINDS = ("model", "sandbox", "git", "provision", "other")


async def run_tickets(count: int, workdir: Path) -> list[dict[str, float]]:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(ALL_KEYS),
    )
    rows = []
    try:
        ids = [f"BENCH-{uuid.uuid4().hex[:6]}" for _ in range(count)]
        for ticket_id in ids:
            copy_playbook("example", ticket_id, workdir / "playbooks")
        settings = make_settings(workdir, playbooks=workdir / "playbooks")
        example = parse_ticket(EXAMPLE_TICKET.read_text())
        async with running_workers(env.client, settings):
            for ticket_id in ids:
                run = resolve_ticket_run(example.model_copy(update={"id": ticket_id}), settings)
                started = time.monotonic()
                outcome = await submit_ticket(env.client, run)
                result = await wait_for_ticket(env.client, outcome.workflow_id, poll_s=0.05)
                wall = time.monotonic() - started
                if not isinstance(result, TicketResult) or result.state != TicketState.READY_FOR_MERGE:
                    raise SystemExit(f"{ticket_id} did not finish: {result}")
                meta = DockerSandboxes(settings.workspaces_root).workspace_for(f"ticket-{ticket_id}").meta
                spent: dict[str, float] = defaultdict(float)
                for line in (meta / "timings.jsonl").read_text().splitlines():
                    record = json.loads(line)
                    spent[record["kind"]] += record["seconds"]
                row = {"wall": wall, "model_api": result.spend.model_seconds, **{k: spent[k] for k in KINDS}}
                row["overhead"] = wall - sum(spent[k] for k in KINDS)
                rows.append(row)
    finally:
        await env.shutdown()
    return rows


def measure_provision(count: int, workdir: Path) -> tuple[list[float], list[float]]:
    client = docker.from_env()
    image = "factory-sandbox:latest"
    sandboxes = DockerSandboxes(workdir / "workspaces", client)
    ours, bare = [], []
    for i in range(count):
        started = time.monotonic()
        client.containers.run(image, ["true"], remove=True)
        bare.append(time.monotonic() - started)
        workflow_id = f"bench-provision-{uuid.uuid4().hex[:6]}-{i}"
        started = time.monotonic()
        # As a ticket gets it: behind the egress proxy, with its size-limited workspace.
        limits = SandboxLimits(egress_allow=["pypi.org", "files.pythonhosted.org", "registry.npmjs.org"])
        _, name, workspace = sandboxes.provision(workflow_id, workflow_id, image, limits)
        ours.append(time.monotonic() - started)
        sandboxes.destroy(name, workspace.root)
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=5)
    parser.add_argument("--provisions", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        rows = asyncio.run(run_tickets(args.tickets, Path(tmp)))
        ours, bare = measure_provision(args.provisions, Path(tmp))

    columns = ("wall", "model", "model_api", "sandbox", "git", "provision", "other", "overhead")
    print(f"{'ticket':>6} " + " ".join(f"{c:>10}" for c in columns) + "   (seconds)")
    for i, row in enumerate(rows, 1):
        print(f"{i:>6} " + " ".join(f"{row[c]:>10.3f}" for c in columns))
    medians = {c: statistics.median(row[c] for row in rows) for c in columns}
    print(f"{'median':>6} " + " ".join(f"{medians[c]:>10.3f}" for c in columns))
    print()
    print("model = model-call activities; model_api = inside the litellm call; sandbox = commands and tool calls;")
    print("git = clone + verified push; provision = create + destroy sandbox; overhead = wall - all activities")
    print(f"orchestration overhead per ticket: median {medians['overhead']:.3f} s (target <= 1 s)")
    ratio = statistics.median(ours) / statistics.median(bare)
    print(
        f"sandbox provision: median {statistics.median(ours):.3f} s vs bare `docker run --rm` "
        f"{statistics.median(bare):.3f} s over {len(ours)} runs: {ratio:.2f}x (target <= 2x)"
    )


if __name__ == "__main__":
    main()
