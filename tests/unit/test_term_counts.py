"""TermCounts' bookkeeping: one version per project, bounded in projects and terms."""

from __future__ import annotations

import uuid

from quarry.search.service import TermCounts


def test_unknown_project_knows_nothing_and_a_new_version_forgets_the_old() -> None:
    counts = TermCounts()
    project = uuid.uuid4()
    assert counts.known(project, ["a", "b"]) == (None, [None, None])
    counts.learn(project, "100", ["a", "b"], [3, 0])
    assert counts.known(project, ["b", "c", "a"]) == ("100", [0, None, 3])
    counts.learn(project, "100", ["c"], [5])
    assert counts.known(project, ["a", "c"]) == ("100", [3, 5])
    counts.learn(project, "101", ["c"], [6])  # the statistics changed: a and b are stale
    assert counts.known(project, ["a", "c"]) == ("101", [None, 6])


def test_bounded_in_projects_least_recently_searched_first_and_in_terms() -> None:
    counts = TermCounts(max_projects=2, max_terms=3)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    counts.learn(first, "1", ["a"], [1])
    counts.learn(second, "1", ["a"], [2])
    counts.known(first, ["a"])  # first is now the more recent
    counts.learn(third, "1", ["a"], [3])
    assert counts.known(second, ["a"]) == (None, [None])
    assert counts.known(first, ["a"]) == ("1", [1])
    counts.learn(first, "1", ["b", "c", "d"], [1, 1, 1])  # four terms: the old ones go
    assert counts.known(first, ["a", "b", "d"]) == ("1", [None, 1, 1])
    counts.learn(first, "1", ["b", "c"], [1, 1])  # at the bound, known terms keep the rest
    assert counts.known(first, ["b", "c", "d"]) == ("1", [1, 1, 1])
