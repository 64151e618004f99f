"""resources (RFC 8707) and what each client may do with them

A resource is a registered API: an absolute URI (the `aud` of its tokens), a name, the scopes
it defines and an optional shorter access-token lifetime. A client's grant toward a resource
is one row per kind: `serves` (the client is that API's server: tokens for it may be its
subject tokens at token exchange), `token` (client_credentials for it) and `exchange` (token
exchange toward it). Deleting a resource or a client deletes its grants.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE resources ("
        " id uuid NOT NULL DEFAULT gen_random_uuid(),"
        " uri text NOT NULL,"
        " name text NOT NULL,"
        " scopes text[] NOT NULL DEFAULT '{}'::text[],"
        " access_token_ttl integer,"
        " created_at timestamptz NOT NULL DEFAULT now(),"
        " CONSTRAINT resources_pkey PRIMARY KEY (id),"
        " CONSTRAINT resources_uri_key UNIQUE (uri),"
        " CONSTRAINT resources_uri_length_check CHECK (length(uri) <= 512),"
        " CONSTRAINT resources_access_token_ttl_check"
        " CHECK (access_token_ttl IS NULL OR access_token_ttl > 0))"
    )
    op.execute(
        "CREATE TABLE client_resources ("
        " client_id text NOT NULL,"
        " resource_id uuid NOT NULL,"
        " kind text NOT NULL,"
        " scopes text[] NOT NULL DEFAULT '{}'::text[],"
        " created_at timestamptz NOT NULL DEFAULT now(),"
        " CONSTRAINT client_resources_pkey PRIMARY KEY (client_id, resource_id, kind),"
        " CONSTRAINT client_resources_kind_check CHECK (kind IN ('serves', 'token', 'exchange')),"
        " CONSTRAINT client_resources_client_id_fkey FOREIGN KEY (client_id)"
        " REFERENCES clients (client_id) ON DELETE CASCADE,"
        " CONSTRAINT client_resources_resource_id_fkey FOREIGN KEY (resource_id)"
        " REFERENCES resources (id) ON DELETE CASCADE)"
    )
    op.execute("CREATE INDEX client_resources_resource_id ON client_resources (resource_id)")


def downgrade() -> None:
    op.execute("DROP TABLE client_resources")
    op.execute("DROP TABLE resources")
