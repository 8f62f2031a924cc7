"""The factory's schedules, declared as plain data.

``factory schedules apply`` turns each into a Temporal schedule (creating it, or
updating the one of the same name: never a duplicate). Workflows are named by their
type, so this module needs none of them importable.

Overlap: every schedule skips a run while the previous one is still going. A night
shift still working at the next 19:00 is not doubled; neither is a long janitor run
or discovery run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from factory.config import Settings
from factory.errors import FactoryError
from factory.models import DiscoveryRequest, JanitorRequest, NightShiftRequest

__all__ = [
    "DISCOVERY",
    "JANITOR",
    "NIGHT_SHIFT",
    "DeclaredSchedule",
    "cron_at",
    "declared_schedule",
    "declared_schedules",
]

NIGHT_SHIFT = "night-shift"
JANITOR = "janitor"
DISCOVERY = "discovery"


@dataclass(frozen=True)
class DeclaredSchedule:
    """One schedule: when (cron in a time zone), what (workflow type, queue, request), and how runs may overlap."""

    name: str
    cron: str
    time_zone: str
    workflow: str
    task_queue: str
    request: BaseModel
    workflow_id: str
    note: str
    overlap: Literal["skip", "buffer_one", "allow_all"] = "skip"


def cron_at(clock: str, day_of_week: str = "*") -> str:
    """``HH:MM`` (and a day of the week) as a five-field cron expression."""
    hour, minute = (int(part) for part in clock.split(":")[:2])
    return f"{minute} {hour} * * {day_of_week}"


def declared_schedules(settings: Settings) -> list[DeclaredSchedule]:
    config = settings.night_shift
    tz = config.time_zone
    return [
        DeclaredSchedule(
            name=DISCOVERY,
            cron=cron_at(config.discovery_at),
            time_zone=tz,
            workflow="DiscoveryWorkflow",
            task_queue="discovery",
            request=DiscoveryRequest(),
            workflow_id="discovery",
            note="Discovery: file ready-for-robot tickets before the 18:00 approval.",
        ),
        DeclaredSchedule(
            name=NIGHT_SHIFT,
            cron=cron_at(config.start),
            time_zone=tz,
            workflow="NightShiftWorkflow",
            task_queue="execution",
            request=NightShiftRequest(),
            workflow_id="night-shift",
            note="Night shift: run the approved tickets, write the Nightly Report.",
        ),
        DeclaredSchedule(
            name=JANITOR,
            cron=cron_at(config.janitor_at, config.janitor_day),
            time_zone=tz,
            workflow="JanitorWorkflow",
            task_queue="execution",
            request=JanitorRequest(),
            workflow_id="janitor",
            note="Janitor: update outdated dependencies, one pull request chore/update-deps.",
        ),
    ]


def declared_schedule(settings: Settings, name: str) -> DeclaredSchedule:
    for schedule in declared_schedules(settings):
        if schedule.name == name:
            return schedule
    known = ", ".join(s.name for s in declared_schedules(settings))
    raise FactoryError(f"no schedule named {name!r} (declared: {known})")
