"""The service's name rules and the database's CHECK constraints agree (differential fuzz)."""

import re
import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quarry.api.projects import ProjectCreate, ProjectUpdate
from quarry.api.users import UserCreate
from quarry.errors import InvalidInput
from quarry.tenancy.models import USER_NAME
from quarry.tenancy.projects import validate_name

NAMES = st.text(alphabet="abcz019-_.AZ é\t\n", max_size=70) | st.from_regex(
    r"[a-z0-9][a-z0-9-]{0,70}", fullmatch=True
)


@pytest.fixture
def conn(fresh_database: str):
    with psycopg.connect(fresh_database, autocommit=True) as connection:
        yield connection


def _db_accepts(conn: psycopg.Connection, table: str, name: str) -> bool:
    column = {"projects": "name", "users": "name"}[table]
    check = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c'",
        (table,),
    ).fetchone()
    assert check is not None
    assert column in check[0]
    pattern = check[0].split("'")[1]
    return bool(conn.execute("SELECT %s ~ %s", (name, pattern)).fetchone()[0])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_project_names(conn: psycopg.Connection, name: str) -> None:
    try:
        validate_name(name)
        service_accepts = True
    except InvalidInput:
        service_accepts = False
    database_accepts = _db_accepts(conn, "projects", name)
    # The service may be stricter than the database (it refuses UUID-shaped names, which would
    # be ambiguous with ids), never looser.
    assert service_accepts <= database_accepts
    if database_accepts and not service_accepts:
        uuid.UUID(name)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_user_names(conn: psycopg.Connection, name: str) -> None:
    assert bool(USER_NAME.fullmatch(name)) == _db_accepts(conn, "users", name)


def _documented_pattern(schema: dict) -> re.Pattern[str]:
    """A JSON Schema pattern as Python reads it: ECMA's "$" allows no final newline."""
    pattern = schema["properties"]["name"]["pattern"]
    assert pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


@settings(max_examples=300)
@given(name=NAMES)
def test_the_openapi_description_states_the_name_rules(name: str) -> None:
    """What a client checks against the documented patterns is what the service accepts
    (for projects, but for UUID-shaped names, which the description mentions)."""
    project = _documented_pattern(ProjectCreate.model_json_schema())
    assert _documented_pattern(ProjectUpdate.model_json_schema()).pattern == project.pattern
    try:
        validate_name(name)
        service_accepts = True
    except InvalidInput:
        service_accepts = False
    documented = bool(project.match(name))
    assert service_accepts <= documented
    if documented and not service_accepts:
        uuid.UUID(name)
    user = _documented_pattern(UserCreate.model_json_schema())
    assert bool(user.match(name)) == bool(USER_NAME.fullmatch(name))
