"""A delivery's lease in a column of its own, so that claiming it rewrites no index.

Revision ID: 0005
Revises: 0004

The delivery worker claimed a due notification by moving `next_attempt_at`
past the lease. That column is the key of `notification_due`, so every claim
was a non-HOT update: a new version of the whole row (subject, bodies, the
event's payload) with an entry in each of its five to seven indexes, and
vacuum behind them, twice per payment on the bench. The lease now lives in
`lease_expires_at`, which no index names, and `next_attempt_at` keeps meaning
when the attempt is due; the claim changes only unindexed columns, so
PostgreSQL keeps the new version on the same page and the indexes as they are
(a HOT update), when the page has room for it. A worker claims the rows of
a page together, in one statement, so the page must hold a second version of
each at once: with rows of ~1.1 KB (an email with its HTML), a fillfactor of
70 left room for two of the five rows a page took, and 40% of the claims
still went to other pages (a bench run at 178 payments/s: 12,903 HOT of
21,443 claims, 37 MB). At 50 every claim was HOT (21,434 of 21,443) in 59 MB,
at 40 too in 88 MB. The outcome's update changes the state, so it cannot be
HOT. The fillfactor applies to pages filled from now on.

A row leased by a worker still running the previous version has its
`next_attempt_at` in the future and no lease: nothing claims it before then,
as before. During a rollout, a row leased by a new worker looks due to an old
one, which may send it again: delivery is at least once, and the recipient
dedupes by Message-ID or webhook-id (docs/notifications.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("notification", sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
    op.execute("ALTER TABLE notification SET (fillfactor = 50)")


def downgrade() -> None:
    # A lease still running keeps its rows away from the previous version's workers.
    op.execute(
        "UPDATE notification SET next_attempt_at = lease_expires_at "
        "WHERE state = 'PENDING' AND lease_expires_at > next_attempt_at"
    )
    op.execute("ALTER TABLE notification RESET (fillfactor)")
    op.drop_column("notification", "lease_expires_at")
