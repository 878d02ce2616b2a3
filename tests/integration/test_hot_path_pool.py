"""A hot-path asyncpg pool with generic plans (paymesh_runtime.db.create_pool, as payment_svc's batches
use it) plans each statement once; without them PostgreSQL chooses.

Batch statements take whole batches as arrays; left to choose, PostgreSQL makes a custom plan for at
least the first five executions of a prepared statement, and for payment_svc's batch statements at
every call (docs/performance.md, "Plans made once"). Checked against the real PostgreSQL with the
plan counts it keeps per prepared statement (pg_prepared_statements).
"""

from __future__ import annotations

import uuid

import pytest

from devstack.stack import Stack
from paymesh_runtime.db import create_pool
from tests.integration.wallet_support import migrate, settings_for

pytestmark = pytest.mark.integration

# A batch lookup shaped like the money path's: the batch as an array, joined to a table by its key.
BATCH_LOOKUP = "SELECT count(*) FROM accounts a JOIN unnest($1::uuid[]) AS i(id) ON a.id = i.id"


async def plans_of_eight_batches(stack: Stack, *, generic_plans: bool) -> tuple[int, int]:
    """(generic, custom) plans of eight executions of a batch lookup on a fresh pool connection."""
    pool = await create_pool(settings_for(stack), 1, generic_plans=generic_plans)
    try:
        async with pool.acquire() as conn:
            statement = await conn.prepare(BATCH_LOOKUP)
            for size in (1, 3, 1, 7, 2, 1, 5, 1):
                assert await statement.fetchval([uuid.uuid4() for _ in range(size)]) == 0
            generic, custom = await conn.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", BATCH_LOOKUP
            )
    finally:
        await pool.close()
    return int(generic), int(custom)


async def test_a_batch_statement_on_a_pool_with_generic_plans_is_planned_once(infra: Stack) -> None:
    await migrate(infra)
    assert await plans_of_eight_batches(infra, generic_plans=True) == (8, 0)
    # PostgreSQL's own choice: custom plans first (at least five).
    _, custom = await plans_of_eight_batches(infra, generic_plans=False)
    assert custom >= 5
