"""The completion webhook a submit asks for, checked before the task is accepted."""

from __future__ import annotations

from actors.config import WebhooksConfig
from actors.webhooks.sender import check_url
from serve_app.http.auth import USER, Caller
from serve_app.http.problems import Forbidden, Unprocessable


async def webhook_for(body_url: str | None, caller: Caller, config: WebhooksConfig) -> str:
    """The URL to POST the task view to when the task ends ("" for none): the body's
    `webhook_url`, else the service token's default.

    A 403 for a user token (webhooks are for app backends, whose token signs them); a 422
    naming `webhook_url` when webhooks are off, or the URL is not http(s) or resolves to a
    private, loopback or link-local address outside `[webhooks] allow_networks`.
    """
    url = body_url or caller.webhook_url
    if not url:
        return ""
    if body_url and caller.role == USER:
        raise Forbidden("a webhook_url needs a service token: its signing secret signs the webhook")
    if not config.enabled:
        why = "webhooks are off on this server ([webhooks] secret is not set)"
    else:
        why = await check_url(url, config.allow_networks) or ""
        why = f"webhook_url {why}" if why else ""
    if why:
        raise Unprocessable(why, errors=[{"field": "webhook_url", "message": why}])
    return url
