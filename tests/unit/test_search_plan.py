"""When a vector search that HNSW left short looks again more widely, and when it ranks the
project's vectors exactly instead (quarry.search.service.wider_breadth)."""

from __future__ import annotations

from quarry.search.service import MAX_EF_SEARCH, wider_breadth


def test_enough_rows_or_none_at_all_means_no_second_hnsw_search() -> None:
    assert wider_breadth(100, 100, 100, 100_000, 16) is None  # nothing missing
    assert wider_breadth(0, 100, 100, 100_000, 16) is None  # no share to go on: exact


def test_a_broad_filter_on_a_large_project_widens_by_the_share_it_found() -> None:
    # Half of the 100 nearest passed: three times as wide (twice, with a margin of 1.5).
    assert wider_breadth(50, 100, 100, 100_000, 16) == 300
    assert wider_breadth(80, 100, 100, 100_000, 16) == 188


def test_past_pgvectors_widest_search_or_the_projects_size_it_is_exact() -> None:
    # A filter passing 5%: 3,000 wide would be needed, more than pgvector allows.
    assert wider_breadth(5, 100, 100, 1_000_000, 16) is None
    assert wider_breadth(15, 100, 100, 1_000_000, 16) == MAX_EF_SEARCH
    # 300 wide compares about 300 x 32 vectors: more than a project of 9,000 holds.
    assert wider_breadth(50, 100, 100, 9_000, 16) is None
    assert wider_breadth(50, 100, 100, 9_600, 16) == 300
