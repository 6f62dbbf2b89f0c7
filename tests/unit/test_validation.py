"""What a request may carry into Postgres, and client timestamps taken into UTC."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from quarry.validation import MAX_DEPTH, Timestamp, ZonedTimestamp, unstorable, utc, zoned_utc


@pytest.mark.parametrize(
    ("value", "place", "reason"),
    [
        ("a\x00b", "", "NUL"),
        ("a\ud800b", "", "surrogate"),
        (float("nan"), "", "finite"),
        ({"a": [1, {"b": float("-inf")}]}, "a.1.b", "finite"),
        ({"a": {"k\udfff": 1}}, "a", "a key: text must be valid Unicode, without lone surrogates"),
        ([["fine", "\x00"]], "0.1", "NUL"),
    ],
)
def test_unstorable_names_the_place_and_the_reason(value: object, place: str, reason: str) -> None:
    found = unstorable(value)
    assert found is not None
    assert found[0] == place
    assert reason in found[1]


def test_unstorable_starts_below_a_given_place() -> None:
    assert unstorable({"k": float("inf")}, "metadata") == (
        "metadata.k",
        "numbers must be finite, not NaN, Infinity or past 1.8e308",
    )


# JSON's escape of NUL, not preceded by an escaped backslash.
NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

# Text with NUL, lone surrogates (left out by default) and the JSON escape of NUL in it.
texts = st.text(st.characters(exclude_categories=()) | st.sampled_from("\x00\ud800\\u"))


def test_unstorable_walks_any_depth_without_recursion_and_refuses_past_its_limit() -> None:
    deep: object = [float("nan")]
    for _ in range(5000):  # past Python's recursion limit
        deep = [deep]
    found = unstorable({"k": deep})
    assert found is not None
    # Refused where it passes MAX_DEPTH: stored, Pydantic could not serialize it back.
    assert found == (
        "k" + ".0" * (MAX_DEPTH - 1),
        f"values must not nest more than {MAX_DEPTH} levels deep",
    )
    at_limit: object = "leaf"
    for _ in range(MAX_DEPTH):
        at_limit = [at_limit]
    assert unstorable(at_limit) is None
    assert unstorable([at_limit]) is not None


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    # At least one item, so each draws on ``inner`` (hypothesis warns of an extension that
    # may not); the empty ones are leaves.
    return st.lists(inner, min_size=1, max_size=4) | st.dictionaries(
        texts, inner, min_size=1, max_size=4
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts | st.just([]) | st.just({}),
    _containers,
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_what_passes_is_json_postgres_can_hold(value: object) -> None:
    """Whatever ``unstorable`` lets through is strict JSON (no NaN or Infinity) that encodes
    as UTF-8 without a NUL; whatever it refuses is not."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        holdable = NUL_ESCAPE.search(text) is None
    except (ValueError, UnicodeEncodeError):
        holdable = False
    assert (unstorable(value) is None) == holdable


def test_utc_takes_any_offset_into_utc_and_a_bare_time_as_utc() -> None:
    far_west = timezone(-timedelta(hours=23, minutes=20))  # past Postgres' 15:59
    assert utc(datetime(2020, 1, 1, tzinfo=far_west)) == datetime(2020, 1, 1, 23, 20, tzinfo=UTC)
    assert utc(datetime(2020, 1, 1, tzinfo=far_west)).utcoffset() == timedelta(0)
    assert utc(datetime(2020, 1, 1)) == datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=1))),
    ],
)
def test_utc_refuses_times_outside_pythons_years_once_in_utc(moment: datetime) -> None:
    with pytest.raises(ValueError, match="between the years 1 and 9999"):
        utc(moment)


def test_zoned_utc_wants_a_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        zoned_utc(datetime(2100, 1, 1))
    assert zoned_utc(datetime(2100, 1, 1, tzinfo=UTC)) == datetime(2100, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("shape", [Timestamp, ZonedTimestamp])
def test_timestamps_are_iso_8601_text_never_a_unix_time(shape: object) -> None:
    read = TypeAdapter(shape)
    assert read.validate_python("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert read.validate_json('"2024-05-01T10:00:00Z"') == datetime(2024, 5, 1, 10, tzinfo=UTC)
    for number in (0.5, "0.5", 1_700_000_000, "1700000000", True, "", "noon"):
        with pytest.raises(ValidationError, match="ISO 8601"):
            read.validate_python(number)
    with pytest.raises(ValidationError, match="ISO 8601"):
        read.validate_json("1700000000")
