"""roles, user_roles and audit_events; an index for the admin's email prefix search

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("name", sa.Text(), nullable=False),
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
        sa.PrimaryKeyConstraint("name", name="roles_pkey"),
        sa.CheckConstraint("name ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$'", name="roles_name_check"),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", postgresql.UUID(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "role", name="user_roles_pkey"),
        # Erasing a user takes their grants along; a role cannot go while someone holds it.
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="user_roles_user_id_fkey", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["role"], ["roles.name"], name="user_roles_role_fkey", ondelete="RESTRICT"
        ),
    )
    # "Who holds this role" (DELETE /admin/roles/{name} answers 409 while anyone does).
    op.create_index("user_roles_role_idx", "user_roles", ["role"])

    # No foreign keys: an event outlives the user or client it names (an erased user's id stays).
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True)),
        sa.Column(
            "at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("user_id", postgresql.UUID(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.PrimaryKeyConstraint("id", name="audit_events_pkey"),
    )
    # Paging one user's events newest first, and the purge by age.
    op.create_index("audit_events_user_id_idx", "audit_events", ["user_id", "id"])
    op.create_index("audit_events_target_idx", "audit_events", ["target", "id"])
    op.create_index("audit_events_at_idx", "audit_events", ["at"])

    # The admin's case-insensitive email prefix search: the unique index on lower(email) uses
    # the database's collation, which LIKE and range scans on a prefix cannot use.
    op.create_index(
        "users_email_lower_prefix_idx",
        "users",
        [sa.text("lower(email) text_pattern_ops")],
    )
    # The admin's user listing pages in (created_at, id) order.
    op.create_index("users_created_at_id_idx", "users", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("users_created_at_id_idx", table_name="users")
    op.drop_index("users_email_lower_prefix_idx", table_name="users")
    op.drop_table("audit_events")
    op.drop_table("user_roles")
    op.drop_table("roles")
