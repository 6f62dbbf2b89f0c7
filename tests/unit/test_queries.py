import pytest

from quarry.db.queries import Queries, parse


def test_parse_splits_named_blocks() -> None:
    text = (
        "-- a file comment\n-- name: one\nSELECT 1;\n\n-- name: two\n-- what two does\nSELECT 2\n"
    )
    assert parse(text) == {"one": "SELECT 1", "two": "-- what two does\nSELECT 2"}


def test_duplicate_and_empty_queries_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="empty"):
        parse("-- name: a\n\n-- name: b\nSELECT 1\n")


def test_shipped_queries_load_by_file_and_name() -> None:
    queries = Queries.load()
    assert "projects.get_by_id" in queries
    assert queries["projects.get_by_id"].startswith("SELECT")
    with pytest.raises(KeyError, match="no named query"):
        queries["projects.nope"]
