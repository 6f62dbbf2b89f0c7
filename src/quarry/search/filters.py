"""Filters compiled to one SQL condition over a chunk ``c`` and its document ``d``.

Values are quoted by psycopg (``sql.Literal``), never pasted as text. Metadata ranges use a
SQL/JSON path, so a value of another type (a string where a number was expected) compares as
unknown and the row is left out, instead of failing the whole search on a cast.
"""

from __future__ import annotations

import json

from psycopg import sql
from psycopg.types.json import Jsonb

from quarry.search.models import AnyOf, Filters, MetadataCondition, Range

_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def compile_filters(filters: Filters | None) -> sql.Composable | None:
    """The condition, or None when nothing is filtered."""
    if filters is None:
        return None
    parts: list[sql.Composable] = []
    if filters.document_ids is not None:
        parts.append(
            sql.SQL("d.id = ANY({}::uuid[])").format(
                sql.Literal([str(i) for i in filters.document_ids])
            )
        )
    for key, condition in (filters.metadata or {}).items():
        parts.append(_metadata(key, condition))
    if filters.tags:
        parts.append(sql.SQL("d.tags @> {}::text[]").format(sql.Literal(filters.tags)))
    for column, bound, op in (
        ("created_at", filters.created_after, ">="),
        ("created_at", filters.created_before, "<"),
        ("updated_at", filters.updated_after, ">="),
        ("updated_at", filters.updated_before, "<"),
    ):
        if bound is not None:
            parts.append(
                sql.SQL("d.{} {} {}::timestamptz").format(
                    sql.Identifier(column), sql.SQL(op), sql.Literal(bound)
                )
            )
    if not parts:
        return None
    return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in parts)


def _metadata(key: str, condition: MetadataCondition) -> sql.Composable:
    if isinstance(condition, AnyOf):
        alternatives = [
            sql.SQL("d.metadata @> {}").format(sql.Literal(Jsonb({key: value})))
            for value in condition.in_
        ]
        return sql.SQL("({})").format(sql.SQL(" OR ").join(alternatives))
    if isinstance(condition, Range):
        tests = [
            f"@ {_OPERATORS[name]} $v_{name}"
            for name in ("gt", "gte", "lt", "lte")
            if getattr(condition, name) is not None
        ]
        # strict: a lax path would look inside an array value, which equality does not;
        # the type errors strict mode raises are silenced (no match).
        path = f"strict $.{json.dumps(key)} ? ({' && '.join(tests)})"
        variables = {
            f"v_{name}": getattr(condition, name)
            for name in ("gt", "gte", "lt", "lte")
            if getattr(condition, name) is not None
        }
        return sql.SQL("jsonb_path_exists(d.metadata, {}::jsonpath, {}, true)").format(
            sql.Literal(path), sql.Literal(Jsonb(variables))
        )
    return sql.SQL("d.metadata @> {}").format(sql.Literal(Jsonb({key: condition})))
