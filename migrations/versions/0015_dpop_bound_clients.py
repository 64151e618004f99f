"""Clients whose access tokens must be DPoP-bound (RFC 9449 §5.2 `dpop_bound_access_tokens`)

A client registered with the flag gets no token without a DPoP proof, so a copy of its client
secret alone no longer yields a bearer token. Existing clients keep working unchanged (false).

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens boolean NOT NULL DEFAULT false"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE clients DROP COLUMN dpop_bound_access_tokens")
