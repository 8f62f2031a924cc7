"""Team notifications through Slack and Discord incoming webhooks.

The payloads are the services' real formats: Slack's ``text`` plus Block Kit
``blocks``, Discord's ``content`` plus one ``embed``. A failed delivery raises
``NotificationFailed``; the activity retries it a few times and the workflow never
lets it fail a ticket.
"""

from __future__ import annotations

from typing import Any

import httpx

from factory.config import NotificationsConfig
from factory.errors import NotificationFailed
from factory.models import Notification

__all__ = ["discord_payload", "send_notification", "slack_payload"]

_MAX_FIELD = 1000


def slack_payload(note: Notification) -> dict[str, Any]:
    title = f"<{note.url}|{note.title}>" if note.url else note.title
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{note.text}"[:3000]}},
    ]
    if note.fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"[:_MAX_FIELD]}
                    for name, value in list(note.fields.items())[:10]
                ],
            }
        )
    return {"text": f"{note.title}: {note.text}"[:3000], "blocks": blocks}


def discord_payload(note: Notification) -> dict[str, Any]:
    embed: dict[str, Any] = {
        "title": note.title[:256],
        "description": note.text[:4096],
        "fields": [
            {"name": name[:256], "value": (value or "-")[:_MAX_FIELD], "inline": True}
            for name, value in list(note.fields.items())[:25]
        ],
    }
    if note.url and note.url.startswith(("http://", "https://")):
        embed["url"] = note.url
    return {"content": note.title[:2000], "embeds": [embed]}


def send_notification(
    note: Notification, config: NotificationsConfig, *, transport: httpx.BaseTransport | None = None
) -> list[str]:
    """Post to every configured webhook; returns the channels that accepted it."""
    targets = [
        (channel, url, payload)
        for channel, url, payload in (
            ("slack", config.slack_webhook_url, slack_payload(note)),
            ("discord", config.discord_webhook_url, discord_payload(note)),
        )
        if note.channel in (None, channel)
    ]
    delivered: list[str] = []
    failures: list[str] = []
    with httpx.Client(timeout=config.timeout_s, transport=transport) as client:
        for channel, url, payload in targets:
            if not url:
                continue
            try:
                response = client.post(url, json=payload)
            except httpx.HTTPError as exc:
                failures.append(f"{channel}: {type(exc).__name__}")
                continue
            if response.status_code >= 300:
                failures.append(f"{channel}: HTTP {response.status_code}")
            else:
                delivered.append(channel)
    if failures:
        # Webhook URLs are secrets: name the channel, never the URL.
        raise NotificationFailed(f"notification not delivered ({'; '.join(failures)}); will retry")
    return delivered
