"""The HTTP client for URLs that users chose (webhook endpoints, push subscriptions): no SSRF.

Merchants and users pick these URLs, so a request must never reach the
internal network. Checking a host name when it is registered is not enough
(DNS can change, or answer differently on the next lookup), so the check
happens where the connection is made: the client's network backend resolves
the host itself, refuses loopback, private, link-local and other non-public
addresses, and connects to the address it checked. TLS still verifies the
certificate against the URL's host name (httpcore takes SNI from the URL, not
from the address connected to). Redirects are not followed and proxies from
the environment are ignored, so neither can lead elsewhere.

In the local and test stacks (NOTIFY_WEBHOOK_ALLOW_PRIVATE_HOSTS=true),
whose receivers listen on 127.0.0.1, a plain client is used instead.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

from notify_svc.webhooks import address_is_public

REFUSED = "the destination resolves to a non-public address"


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses, to the very address it checked."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (the signature of the interface implemented)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve the destination: {error}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        # Every address must be public: otherwise a name resolving to a public and a private address
        # would reach the private one whenever the public one fails.
        if not addresses or not all(address_is_public(address) for address in addresses):
            raise httpcore.ConnectError(REFUSED)
        last: Exception | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last = error
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (the signature of the interface implemented)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx has no option for the network backend: its pool is replaced by one with the same TLS
        # context and limits that connects through PublicOnlyBackend (httpx and httpcore are pinned).
        built = self._pool
        assert isinstance(built, httpcore.AsyncConnectionPool)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=built._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PublicOnlyBackend(),
        )


def outbound_client(timeout_seconds: float, allow_private_hosts: bool) -> httpx.AsyncClient:
    """The client for user-chosen URLs: short timeouts, no redirects, no proxies, no private destinations."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 3.0))
    if allow_private_hosts:
        return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, limits=limits)
    return httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, trust_env=False, transport=PublicOnlyTransport(limits)
    )
