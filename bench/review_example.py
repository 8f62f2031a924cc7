"""Time and cost of reviewing the example pull request with the offline scripted reviewer.

Runs the example ticket (CALC-1's playbooks) N times on a fresh dev server with
in-process workers, real sandboxes and real git, with governance on, and prints
for each review: the ReviewWorkflow's wall time (start to close, from the
server), its verdict, the tokens and the cost it reported.

    uv run python bench/review_example.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402

from factory.models import ReviewResult, TicketState, parse_ticket  # noqa: E402
from factory.runs import resolve_ticket_run  # noqa: E402
from starter import submit_ticket, wait_for_ticket  # noqa: E402
from tests.conftest import EXAMPLE_TICKET, copy_playbook, make_settings  # noqa: E402
from tests.workflows.test_ticket_workflow import running_workers  # noqa: E402
from workflows.search_attributes import ALL_KEYS  # noqa: E402


async def main(runs: int) -> None:
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=list(ALL_KEYS),
    )
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="factory-bench-review-") as tmp:
            workdir = Path(tmp)
            ids = [f"REV-{uuid.uuid4().hex[:6]}" for _ in range(runs)]
            for ticket_id in ids:
                copy_playbook("example", ticket_id, workdir / "playbooks")
                copy_playbook("example.review", ticket_id, workdir / "playbooks")
            settings = make_settings(workdir, playbooks=workdir / "playbooks", governance=True)
            example = parse_ticket(EXAMPLE_TICKET.read_text())
            async with running_workers(env.client, settings):
                for ticket_id in ids:
                    run = resolve_ticket_run(example.model_copy(update={"id": ticket_id}), settings)
                    outcome = await submit_ticket(env.client, run)
                    result = await wait_for_ticket(env.client, outcome.workflow_id, poll_s=0.1)
                    if result is None or result.state != TicketState.READY_FOR_MERGE:
                        raise SystemExit(f"{ticket_id} did not reach ready_for_merge: {result}")
                    review_ids: list[str] = []
                    for _ in range(100):  # visibility is eventually consistent
                        review_ids = [
                            wf.id
                            async for wf in env.client.list_workflows("WorkflowType = 'ReviewWorkflow'")
                            if wf.id.startswith(f"review-{ticket_id}-")
                        ]
                        if review_ids:
                            break
                        await asyncio.sleep(0.1)
                    for review_id in review_ids:
                        handle = env.client.get_workflow_handle(review_id, result_type=ReviewResult)
                        review = await handle.result()
                        described = await handle.describe()
                        assert described.close_time is not None
                        seconds = (described.close_time - described.start_time).total_seconds()
                        rows.append((ticket_id, seconds, review))
                    await env.client.get_workflow_handle(outcome.workflow_id).terminate("benchmark done")
    finally:
        await env.shutdown()

    print(f"{'ticket':>12} {'seconds':>8} {'verdict':>16} {'tokens':>8} {'cost USD':>9}  checks")
    for ticket_id, seconds, review in rows:
        print(
            f"{ticket_id:>12} {seconds:>8.2f} {review.verdict.value:>16} {review.usage.tokens:>8} "
            f"{review.usage.cost_usd:>9.4f}  {', '.join(review.checks_run)}"
        )
    print(
        f"review of the example PR: median {statistics.median(s for _, s, _ in rows):.2f} s, "
        f"cost ${statistics.median(r.usage.cost_usd for _, _, r in rows):.4f} "
        f"(offline scripted reviewer: tokens are counted, its price is 0)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
