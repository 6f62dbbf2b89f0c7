"""Postgres: the single store. Pool, migrations, named queries, the embedded server."""
