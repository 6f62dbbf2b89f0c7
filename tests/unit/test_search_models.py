"""A metadata condition that fits none of its shapes is one error at its field, saying what is
wrong, not an error per shape pydantic tried under paths of its own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quarry.search.models import MAX_FILTER_VALUES, Filters


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ({"gte": [1]}, "each bound of a range is a string of at most 4096 characters"),
        ({}, "a range needs at least one of gt, gte, lt, lte"),
        ({"gte": 1, "from": 2}, "a range takes gt, gte, lt, lte, not from"),
        ({"in": []}, f"'in' takes a list of 1 to {MAX_FILTER_VALUES} values"),
        ({"in": "a"}, f"'in' takes a list of 1 to {MAX_FILTER_VALUES} values"),
        ({"in": [1], "gte": 0}, "an 'in' condition takes nothing but 'in'"),
        ({"in": [[1]]}, "each value of 'in' is a string of at most 4096 characters"),
        ([1, 2], "a condition is a value (a string of at most 4096 characters"),
        (None, "or a range of gt, gte, lt, lte"),
        ("x" * 4097, "a condition is a value"),
    ],
)
def test_a_bad_condition_is_one_error_at_its_field(condition: object, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Filters.model_validate({"metadata": {"year": condition}})
    (error,) = caught.value.errors()
    assert error["loc"] == ("metadata", "year")
    assert says in error["msg"]


@pytest.mark.parametrize(
    "condition", [2019, "2019", 1.5, True, {"in": [1, "a"]}, {"gte": 1}, {"lt": "2020-01-01"}]
)
def test_every_shape_of_condition_still_validates(condition: object) -> None:
    assert Filters.model_validate({"metadata": {"year": condition}}).metadata is not None
