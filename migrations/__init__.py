"""alembic's migration scripts; shipped in the wheel as `tokenrota_server.migrations`."""
