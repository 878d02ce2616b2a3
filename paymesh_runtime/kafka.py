"""Kafka helpers shared by producers and consumers."""

from __future__ import annotations

from aiokafka import AIOKafkaClient

TOPIC_PAYMENTS = "paymesh.payments.v1"
TOPIC_WALLETS = "paymesh.wallets.v1"
TOPIC_USERS = "paymesh.users.v1"
TOPIC_NOTIFICATIONS_DLQ = "paymesh.notifications.dlq.v1"


class KafkaMetadataProbe:
    """Asks the cluster for its metadata: a real request, not a port probe."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap = bootstrap_servers
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self._client is None:
            client = AIOKafkaClient(bootstrap_servers=self._bootstrap, request_timeout_ms=2000)
            await client.bootstrap()
            self._client = client
        metadata = await self._client.fetch_all_metadata()
        if not metadata.brokers():
            raise ConnectionError("kafka metadata lists no broker")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
