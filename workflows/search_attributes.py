"""Search attributes of ticket workflows: filter by them in the Web UI and `factory list`.

`factory server start` registers them with the dev server; on another cluster,
register them once with `temporal operator search-attribute create`.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = ["ALL_KEYS", "REPO", "TICKET_ID", "TICKET_PRIORITY", "TICKET_STATE", "TICKET_TYPE"]

TICKET_ID = SearchAttributeKey.for_keyword("TicketId")
TICKET_TYPE = SearchAttributeKey.for_keyword("TicketType")
TICKET_PRIORITY = SearchAttributeKey.for_keyword("TicketPriority")
REPO = SearchAttributeKey.for_keyword("Repo")
TICKET_STATE = SearchAttributeKey.for_keyword("TicketState")

ALL_KEYS = (TICKET_ID, TICKET_TYPE, TICKET_PRIORITY, REPO, TICKET_STATE)
