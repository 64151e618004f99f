"""Every SQL statement of the service: table modules, the pool, the schema, embedded Postgres."""
