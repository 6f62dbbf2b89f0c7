"""Named SQL queries, loaded from ``queries/*.sql``.

A file holds blocks that each start with a ``-- name: <name>`` line; a query is addressed as
``<file stem>.<name>`` (``projects.get_by_id``). Parameters use psycopg's ``%(name)s`` style.
Keeping SQL in files lets a backend swap (Citus, pg_search) be a swap of queries.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import LiteralString

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


class Queries(Mapping[str, LiteralString]):
    def __init__(self, queries: dict[str, str]) -> None:
        self._queries = queries

    @classmethod
    def load(cls) -> Queries:
        found: dict[str, str] = {}
        folder = resources.files("quarry.db") / "queries"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".sql"):
                stem = entry.name.removesuffix(".sql")
                for name, sql in parse(entry.read_text(encoding="utf-8")).items():
                    found[f"{stem}.{name}"] = sql
        return cls(found)

    def __getitem__(self, name: str) -> LiteralString:
        try:
            return self._queries[name]  # text from files shipped in the package
        except KeyError:
            raise KeyError(f"no named query {name!r} in quarry/db/queries") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse(text: str) -> dict[str, str]:
    """Split one file into its named queries; text before the first name is a comment."""
    queries: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            if name is not None:
                queries[name] = _clean(body)
            name, body = match.group(1), []
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice")
        elif name is not None:
            body.append(line)
    if name is not None:
        queries[name] = _clean(body)
    for query_name, sql in queries.items():
        if not sql:
            raise ValueError(f"query {query_name!r} is empty")
    return queries


def _clean(lines: list[str]) -> str:
    return "\n".join(lines).strip().rstrip(";").strip()
