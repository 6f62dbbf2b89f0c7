"""Procrastinate's schema, taken from the pinned procrastinate package.

A later procrastinate upgrade adds a migration that returns the text of that release's own
migration files (``SchemaManager.get_migrations_path()``), in order.
"""

from procrastinate.schema import SchemaManager


def sql() -> str:
    return SchemaManager.get_schema()
