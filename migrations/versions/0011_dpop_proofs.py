"""DPoP proofs seen, so that one is never accepted twice by any instance

A DPoP proof (RFC 9449) is accepted once: its key's thumbprint and its `jti` are kept until the
proof would be too old anyway, and a second insert of the pair is refused by the primary key.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE dpop_proofs ("
        " jkt text NOT NULL,"
        " jti text NOT NULL,"
        " expires_at timestamptz NOT NULL,"
        " PRIMARY KEY (jkt, jti))"
    )
    op.execute("CREATE INDEX dpop_proofs_expires_at ON dpop_proofs (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE dpop_proofs")
