"""clients, for service-to-service OAuth 2.0

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        # argon2id hash of the client secret; the secret is shown once, at creation.
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::text[]"),
        ),
        sa.Column(
            "created_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("disabled_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name="clients_pkey"),
        sa.CheckConstraint("length(client_id) <= 128", name="clients_client_id_length_check"),
    )
    # Client access tokens are stateless JWTs; revoking one (RFC 7009) records its verified jti
    # here until it would have expired anyway, so that introspection can answer inactive.
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column(
            "revoked_at",
            sa.TIMESTAMP(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("jti", name="revoked_access_tokens_pkey"),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.client_id"],
            name="revoked_access_tokens_client_id_fkey",
            ondelete="CASCADE",
        ),
    )
    op.create_index("revoked_access_tokens_expires_at_idx", "revoked_access_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_access_tokens")
    op.drop_table("clients")
