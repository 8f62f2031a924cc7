"""Ticket sources and sinks: the Tracker protocol and its backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from factory.trackers.base import Tracker
from factory.trackers.local import LocalTracker

if TYPE_CHECKING:
    from factory.config import Settings

__all__ = ["LocalTracker", "Tracker", "tracker_for"]


def tracker_for(settings: Settings) -> Tracker:
    """The configured tracker (today: the local file-backed one under ``<home>/tickets``)."""
    return LocalTracker(settings.tickets_root)
