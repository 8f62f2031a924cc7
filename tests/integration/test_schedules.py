"""Schedules as code against the real dev server (the time-skipping test server has no schedules)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleDescription, ScheduleOverlapPolicy

from factory.config import load_settings
from starter import apply_schedules
from tests.conftest import write_config

FACTORY = Path(sys.executable).parent / "factory"
NAMES = ("discovery", "night-shift", "janitor")


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.3)


async def our_schedule_ids(client: Client) -> list[str]:
    return sorted([s.id async for s in await client.list_schedules() if s.id in NAMES])


def factory_cli(tmp_path: Path, address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    return subprocess.run(
        [str(FACTORY), "--config", str(tmp_path / "factory.toml"), "--address", address, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


async def test_schedules_apply_idempotently_keep_a_pause_and_never_double_a_running_night(
    dev_client: Client, tmp_path: Path
) -> None:
    """`schedules apply` creates the three schedules, then updates them (no duplicate, a pause kept);
    the night shift fires at 19:00 Berlin time; `schedules list` shows them; triggered while its previous
    run is still going, the night shift is skipped (overlap policy), not started a second time."""
    settings = load_settings(write_config(tmp_path, '[night_shift]\ntime_zone = "Europe/Berlin"\n'))
    night = dev_client.get_schedule_handle("night-shift")
    try:
        assert await apply_schedules(dev_client, settings) == [(name, "created") for name in NAMES]
        await night.pause(note="maintenance window")
        assert await apply_schedules(dev_client, settings) == [(name, "updated") for name in NAMES]

        async def listed() -> bool:
            return await our_schedule_ids(dev_client) == sorted(NAMES)

        await eventually(listed)
        paused = await night.describe()
        assert paused.schedule.state.paused and paused.schedule.state.note == "maintenance window"
        await night.unpause()

        description = await night.describe()
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("NightShiftWorkflow", "execution")
        assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert description.schedule.spec.time_zone_name == "Europe/Berlin"
        upcoming = description.info.next_action_times[0].astimezone(ZoneInfo("Europe/Berlin"))
        assert (upcoming.hour, upcoming.minute) == (19, 0)

        address = dev_client.service_client.config.target_host
        listing = factory_cli(tmp_path, address, "schedules", "list")
        assert listing.returncode == 0, listing.stderr
        assert "night-shift" in listing.stdout and "0 19 * * *" in listing.stdout and "active" in listing.stdout

        # No worker serves this run, so it stays running: the next trigger finds it still going.
        await night.trigger()

        async def one_running() -> bool:
            return len((await night.describe()).info.running_actions) == 1

        await eventually(one_running)
        await night.trigger()

        async def skipped() -> bool:
            info: ScheduleDescription = await night.describe()
            return info.info.num_actions_skipped_overlap >= 1

        await eventually(skipped)
        info = (await night.describe()).info
        assert len(info.running_actions) == 1 and info.num_actions == 1
    finally:
        for action_ref in (await night.describe()).info.running_actions:
            await dev_client.get_workflow_handle(action_ref.workflow_id).terminate("test over")
        for name in NAMES:
            await dev_client.get_schedule_handle(name).delete()


def test_an_unknown_schedule_name_is_refused_before_connecting(tmp_path: Path) -> None:
    """`factory schedules trigger nightly` names the declared schedules, exit 1, one line, no connection made."""
    write_config(tmp_path)
    proc = factory_cli(tmp_path, "127.0.0.1:1", "schedules", "trigger", "nightly")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: no schedule named 'nightly' (declared: discovery, night-shift, janitor)"
    ]
