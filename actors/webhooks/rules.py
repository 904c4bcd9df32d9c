"""Task-completion webhooks, the pure part: signing secrets, signed headers, the body, what an
attempt's outcome records, which URLs and addresses are refused, and how a URL is logged. No
I/O: time, randomness and name resolution are parameters.

Signing follows the Standard Webhooks convention: headers `webhook-id`, `webhook-timestamp`
and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, with a secret shown
as `whsec_<base64>`. Each token's secret is an HMAC of the server secret over its token id,
so no secret is ever stored, logged or put in an event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from actors.config import Secret, WebhooksConfig
from actors.queue.decide import backoff
from actors.queue.state import PendingWebhook
from events.catalogue import SUCCEEDED, Event, WebhookAttempted, WebhookDelivered, WebhookFailed
from events.public_view import Stage, at_iso, public_status

MAX_URL_CHARS = 2048
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def webhook_id(task_id: str) -> str:
    """The `webhook-id` of a task's completion webhook: the same for every attempt, and after a
    restart, so a receiver can drop a repeat."""
    return f"msg_{task_id}"


def signing_secret(server_secret: Secret, token_id: str) -> str:
    """The `whsec_…` secret that signs the webhooks of tasks submitted with token `token_id`."""
    key = hmac.new(server_secret.reveal().encode(), b"genqueue-webhook:" + token_id.encode(), hashlib.sha256)
    return "whsec_" + base64.b64encode(key.digest()).decode()


def signed_headers(secret: str, msg_id: str, now: float, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt to POST `body` at `now`."""
    stamp = datetime.fromtimestamp(int(now), tz=UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(secret).sign(msg_id, stamp, body),
    }


def _number(view: Mapping[str, str], key: str) -> float | None:
    value = view.get(key)
    return float(value) if value else None


def task_body(task_id: str, view: Mapping[str, str]) -> dict[str, Any]:
    """The task view of an ended task as `GET /v1/tasks/{id}` shows it (`TaskViewOut`; a unit
    test holds the two to the same fields)."""
    status = public_status(view) if view.get("status") else ""
    return {
        "task_id": task_id,
        "user_id": view.get("user_id", ""),
        "kind": view.get("kind", ""),
        "status": status,
        "lane": view.get("lane") or None,
        "position": None,
        "eta_seconds": None,
        "attempts": int(view.get("attempts", 0)),
        "submitted_at": _number(view, "submitted_at"),
        "dispatched_at": _number(view, "dispatched_at"),
        "started_at": _number(view, "started_at"),
        "finished_at": _number(view, "finished_at"),
        "deadline": _number(view, "deadline"),
        "error": view.get("error") or None,
        "result_url": f"/v1/tasks/{task_id}/result" if status == SUCCEEDED else None,
        "result_url_expires_at": None,  # the bearer route's URL does not expire
        "result_url_expires_at_iso": None,
        "pool": view.get("pool") or None,
        "price": int(view["price"]) if view.get("price") else None,
        "refunded": int(view["refunded"]) if view.get("refunded") else None,
        **at_iso(view),
        **Stage().fields(),
        "eta_p90_seconds": None,
    }


def retry_delay(attempt: int, policy: WebhooksConfig, unit: float) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base * 2**(attempt-1))."""
    return backoff(attempt, policy.backoff_base, policy.backoff_cap, 0.5 + unit / 2)


def after_attempt(
    pending: PendingWebhook, code: int, error: str, now: float, policy: WebhooksConfig, unit: float
) -> list[Event]:
    """What one attempt records: the attempt, then the final outcome if it was the last.

    A 2xx is delivered; anything else is retried after `retry_delay`, unless that would pass
    `max_seconds` after the task ended, when the webhook has failed.
    """
    attempt = pending.attempts + 1
    msg_id = webhook_id(pending.task_id)
    t = pending.task_id
    if 200 <= code < 300:
        return [
            WebhookAttempted(task_id=t, webhook_id=msg_id, attempt=attempt, code=code, at=now),
            WebhookDelivered(task_id=t, webhook_id=msg_id, attempts=attempt, code=code, at=now),
        ]
    why = error or f"HTTP {code}"
    next_at = now + retry_delay(attempt, policy, unit)
    if next_at > pending.ended_at + policy.max_seconds:
        bound = f"no 2xx within {policy.max_seconds:g} s ({attempt} attempts); last: {why}"
        return [
            WebhookAttempted(task_id=t, webhook_id=msg_id, attempt=attempt, code=code, error=why, at=now),
            WebhookFailed(task_id=t, webhook_id=msg_id, attempts=attempt, error=bound, at=now),
        ]
    return [
        WebhookAttempted(
            task_id=t, webhook_id=msg_id, attempt=attempt, code=code, error=why, next_at=next_at, at=now
        )
    ]


def off_event(pending: PendingWebhook, reason: str, now: float) -> WebhookFailed:
    """The outcome of a webhook that will not be sent at all."""
    t = pending.task_id
    return WebhookFailed(task_id=t, webhook_id=webhook_id(t), attempts=pending.attempts, error=reason, at=now)


def advance(pending: PendingWebhook, events: Sequence[Event]) -> PendingWebhook | None:
    """The pending webhook after an attempt's events; None once delivered or failed."""
    for event in events:
        if isinstance(event, WebhookDelivered | WebhookFailed):
            return None
        if isinstance(event, WebhookAttempted):
            pending = PendingWebhook(
                pending.task_id, pending.url, pending.token_id, pending.ended_at, event.attempt, event.next_at
            )
    return pending


def url_target(url: str) -> tuple[str, int] | str:
    """(host, port) of a usable webhook URL, or the reason it is not one."""
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def redacted(url: str) -> str:
    """`url` cut to scheme://host:port, for logs: a chat webhook carries its secret in the path
    or query, and credentials would sit before the host."""
    target = url_target(url)
    if isinstance(target, str):
        return "(not a usable URL)"
    host, port = target
    return f"{urlsplit(url).scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Parsed `allow_networks`."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


# IPv6 blocks that are not global unicast but that `is_global` passes on some Python versions;
# most carry an IPv4 address that a translator, a tunnel or the host itself would reach. Named
# so that a refusal says which.
_SPECIAL_IPV6 = tuple(
    (ipaddress.IPv6Network(net), kind)
    for net, kind in (
        ("::/96", "IPv4-compatible"),
        ("::ffff:0:0:0/96", "IPv4-translated (SIIT)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001::/32", "Teredo"),
        ("fec0::/10", "site-local"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _a(kind: str) -> str:
    return f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind} address"


def _kind(ip: Address) -> str:
    for name in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{name}"):
            return name.replace("_", "-")
    return "non-public"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a NAT64 or 6to4 address leads to."""
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _refusal(ip: Address, allowed: Sequence[Network]) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the kernel connects to it over IPv4
    if any(ip in net for net in allowed):
        return None
    if not ip.is_global or ip.is_multicast:
        return f"{ip}, {_a(_kind(ip))}"
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    for net, kind in _SPECIAL_IPV6:
        if ip in net:
            return f"{ip}, {_a(kind)}"
    inner = _embedded_ipv4(ip)
    if inner is not None:
        why = _refusal(inner, ())
        return f"{ip}, which leads to {why}" if why else None
    return None if ip in _GLOBAL_UNICAST else f"{ip}, {_a('non-public')}"


def refused_address(addresses: Iterable[str], allowed: Sequence[Network]) -> str | None:
    """Why one of a host's addresses may not receive webhooks, or None when all may.

    An address inside an allowed network may (an IPv4-mapped one by its IPv4 address). Any
    other must be global unicast, and so must the IPv4 address inside a NAT64 or 6to4 one.
    """
    for text in addresses:
        why = _refusal(ipaddress.ip_address(text.split("%", 1)[0]), allowed)
        if why is not None:
            return f"resolves to {why}"
    return None
