"""The outbound client's destination check (notify_svc.egress), on IP literals and /etc/hosts: nothing leaves."""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import pytest

from notify_svc.egress import REFUSED, PublicOnlyBackend, outbound_client


class _Recorder(httpcore.AsyncNetworkBackend):
    """Stands where the socket would be opened: records the address instead of connecting."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (the interface's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.8", "169.254.169.254", "::1", "192.168.1.1"])
async def test_a_non_public_destination_is_refused_before_any_connection(host: str) -> None:
    inner = _Recorder()
    with pytest.raises(httpcore.ConnectError, match=REFUSED):
        await PublicOnlyBackend(inner).connect_tcp(host, 443, timeout=2)
    assert inner.connected == []


async def test_a_public_address_is_connected_to_as_checked() -> None:
    inner = _Recorder()
    with pytest.raises(httpcore.ConnectError, match="recorded"):
        await PublicOnlyBackend(inner).connect_tcp("93.184.216.34", 443, timeout=2)
    assert inner.connected == [("93.184.216.34", 443)]


async def test_the_production_client_refuses_a_loopback_url_and_follows_no_redirect() -> None:
    client = outbound_client(2.0, allow_private_hosts=False)
    try:
        assert client.follow_redirects is False
        with pytest.raises(Exception, match=REFUSED):
            await client.post("http://127.0.0.1:9/hook", content=b"{}")
    finally:
        await client.aclose()
