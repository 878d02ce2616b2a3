"""The processor simulator's own API, as the harness uses it: fault knobs and the books."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from devstack.chaos.books import ProcessorBooks, SimAuthorization, SimPayout, SimRefund


class SimulatorClient:
    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=10.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def configure(self, settings: Mapping[str, float]) -> None:
        """POST /_sim/config: the knobs given change, the others stay."""
        response = await self._http.post("/_sim/config", json=dict(settings))
        response.raise_for_status()

    async def _list(self, collection: str) -> list[dict[str, Any]]:
        response = await self._http.get(f"/v1/{collection}")
        response.raise_for_status()
        data = response.json().get("data")
        return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []

    async def books(self) -> ProcessorBooks:
        authorizations = [
            SimAuthorization(
                sim_id=str(a["id"]),
                status=str(a["status"]),
                amount=int(a["amount"]),
                currency=str(a["currency"]),
                amount_captured=int(a.get("amount_captured", 0)),
                amount_refunded=int(a.get("amount_refunded", 0)),
                key=str(a.get("idempotency_key", "")),
            )
            for a in await self._list("authorizations")
        ]
        refunds = [
            SimRefund(
                sim_id=str(r["id"]),
                status=str(r["status"]),
                authorization=str(r.get("authorization", "")),
                amount=int(r["amount"]),
                currency=str(r["currency"]),
                key=str(r.get("idempotency_key", "")),
            )
            for r in await self._list("refunds")
        ]
        payouts = [
            SimPayout(
                sim_id=str(o["id"]),
                status=str(o["status"]),
                amount=int(o["amount"]),
                currency=str(o["currency"]),
                key=str(o.get("idempotency_key", "")),
            )
            for o in await self._list("payouts")
        ]
        return ProcessorBooks(authorizations, refunds, payouts)

    async def pending(self) -> int:
        """Payouts and refunds the simulator has not settled yet."""
        books = await self.books()
        return sum(1 for o in books.payouts if o.status == "pending") + sum(
            1 for r in books.refunds if r.status == "pending"
        )
