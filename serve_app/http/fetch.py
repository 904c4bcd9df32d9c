"""Input images given as URLs (`{"url": "https://..."}`), fetched at submit within the caps.

Only https. The host is resolved once and every address it gives is checked by the webhooks'
policy (`actors.webhooks.sender.checked_addresses`: no private, loopback, link-local or other
non-public address unless `[limits] image_url_allow_networks` holds it); the request then
goes to a checked address, with the name kept in the Host header, TLS SNI and the
certificate check, so a name rebound between the check and the connection reaches nothing
new. Redirects are not followed: a 3xx is a failure, its target unchecked. The body is read
as sent (no content decoding) and no further than `[limits] max_image_bytes`; connecting
takes at most `image_url_connect_seconds` and the whole fetch `image_url_seconds`. What
comes back then meets the same checks as an uploaded image (`images.check_image`).

A URL that cannot be fetched is a 422 naming its field, raised before anything is charged
or written.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Annotated

import httpx
from fastapi import Depends, Request

from actors.config import LimitsConfig
from actors.webhooks.rules import networks, url_target
from actors.webhooks.sender import Resolver, checked_addresses, first_to_connect, pinned, resolve
from serve_app.http.problems import Unprocessable

# What the server is asked for: an image, as stored (a compressed answer is not decoded, so
# its size is what the cap counts).
ACCEPT = {"accept": "image/png, image/jpeg, image/webp", "accept-encoding": "identity"}


def url_refusal(url: str) -> str | None:
    """Why `url` is not one genqueue fetches (its scheme or shape), or None."""
    if not url.lower().startswith("https://"):
        return "must be an https URL"
    target = url_target(url)
    return target if isinstance(target, str) else None


def answer_refusal(status: int, declared: str | None, max_bytes: int) -> str | None:
    """Why an answer's status line and Content-Length (`declared`) rule it out, or None."""
    if 300 <= status < 400:
        return f"answered HTTP {status}, a redirect; redirects are not followed"
    if not 200 <= status < 300:
        return f"answered HTTP {status}"
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        return f"holds {int(declared)} bytes, the limit is {max_bytes} ([limits] max_image_bytes)"
    return None


def failure(exc: Exception, limits: LimitsConfig) -> str:
    """What a failed request says in a 422 (the error's first line, cut short)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"could not be connected to within {limits.image_url_connect_seconds:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"did not answer in full within {limits.image_url_seconds:g} s"
    first = (str(exc).splitlines() or [""])[0][:160]
    return f"could not be fetched ({type(exc).__name__}: {first})"


def trust(ca_file: str) -> ssl.SSLContext | bool:
    """How servers are verified: the default CAs, or only those of the PEM bundle `ca_file`."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


class Fetcher:
    """The image URL fetches of one ingress replica, at most `[limits] image_url_fetches` at once
    (0: URLs are refused). `resolver` looks hosts up, once per fetch. A CA bundle that cannot
    be read is an error here, not a refused URL."""

    def __init__(self, limits: LimitsConfig, resolver: Resolver = resolve) -> None:
        self._limits = limits
        self._verify = trust(limits.image_url_ca_file)
        self._allowed = networks(limits.image_url_allow_networks)
        self._resolver = resolver
        self._slots = asyncio.Semaphore(max(1, limits.image_url_fetches))
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The replica's HTTP client (made on first use, in its event loop)."""
        if self._client is None:
            lim = self._limits
            self._client = httpx.AsyncClient(
                verify=self._verify,
                timeout=httpx.Timeout(lim.image_url_seconds, connect=lim.image_url_connect_seconds),
                follow_redirects=False,  # a redirect could point anywhere, a private address too
                limits=httpx.Limits(max_connections=max(1, lim.image_url_fetches)),
                trust_env=False,  # no proxy from the environment: it would reach unchecked places
            )
        return self._client

    async def fetch_all(self, urls: Mapping[str, str]) -> dict[str, bytes]:
        """The bytes behind each role's URL, fetched at once; a 422 naming every image field that
        could not be fetched."""
        found = await asyncio.gather(*(self.fetch(url) for url in urls.values()))
        failed = [
            {"field": f"images.{role}", "message": f"the URL {why}"}
            for role, why in zip(urls, found, strict=True)
            if isinstance(why, str)
        ]
        if failed:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in failed)
            raise Unprocessable(detail, errors=failed)
        return {role: data for role, data in zip(urls, found, strict=True) if isinstance(data, bytes)}

    async def fetch(self, url: str) -> bytes | str:
        """The bytes at `url`, or why they could not be fetched."""
        lim = self._limits
        if lim.image_url_fetches == 0:
            return "is not fetched: this server takes images as base64 or uploads only"
        why = url_refusal(url)
        if why is not None:
            return why
        async with self._slots:
            try:
                async with asyncio.timeout(lim.image_url_seconds):
                    return await self._get(url)
            except TimeoutError:
                return f"did not answer in full within {lim.image_url_seconds:g} s"
            except (httpx.HTTPError, httpx.InvalidURL, OSError, UnicodeError) as exc:  # ssl's are OSErrors
                return failure(exc, lim)

    async def _get(self, url: str) -> bytes | str:
        """GET `url` from the first of its host's checked addresses that takes a connection."""
        found = await checked_addresses(url, self._allowed, self._resolver)
        if isinstance(found, str):
            return found
        target, headers, extensions = pinned(url, ACCEPT)

        async def read(address: str) -> bytes | str:
            return await self._read(target, address, headers, extensions)

        return await first_to_connect(found, read)

    async def _read(
        self, target: httpx.URL, address: str, headers: dict[str, str], extensions: dict[str, object]
    ) -> bytes | str:
        request = self.client.build_request(
            "GET", target.copy_with(host=address), headers=headers, extensions=extensions
        )
        response = await self.client.send(request, stream=True)
        try:
            cap = self._limits.max_image_bytes
            why = answer_refusal(response.status_code, response.headers.get("content-length"), cap)
            if why is not None:
                return why
            return await read_capped(response.aiter_raw(), cap)
        finally:
            await response.aclose()


async def read_capped(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes | str:
    """The bytes of `chunks`, or why not: more than `max_bytes`, found without reading further."""
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:
            return f"holds more than {max_bytes} bytes, the limit ([limits] max_image_bytes)"
    return bytes(data)


async def replica_fetcher(request: Request) -> Fetcher:
    """The app's Fetcher (a FastAPI dependency; async, so it runs without a thread hop), made
    on its first use."""
    state = request.app.state
    fetcher: Fetcher | None = getattr(state, "image_fetcher", None)
    if fetcher is None:
        fetcher = state.image_fetcher = Fetcher(state.ctx.config.limits)
    return fetcher


FetcherDep = Annotated[Fetcher, Depends(replica_fetcher)]
