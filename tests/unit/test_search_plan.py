"""How the service plans a search's steps: when a vector search that HNSW left short looks
again more widely, and when it ranks the project's vectors exactly instead (wider_breadth);
how many of BM25's unfiltered best are checked against a filter at once (check_in_stages)."""

from __future__ import annotations

import uuid

import numpy as np
import numpy.typing as npt

from quarry.search.fusion import Candidate, Run
from quarry.search.service import MAX_EF_SEARCH, check_in_stages, wider_breadth


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


class PassingIds:
    """A filter check over a fixed set of passing chunk ids, recording what it was asked."""

    def __init__(self, passing: set[int]) -> None:
        self.passing = passing
        self.asked: list[list[int]] = []

    async def __call__(
        self, chunk_ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]
    ) -> Run:
        self.asked.append(chunk_ids.tolist())
        return [
            Candidate(chunk_id, uuid.UUID(int=chunk_id), score)
            for chunk_id, score in zip(chunk_ids.tolist(), scores.tolist(), strict=True)
            if chunk_id in self.passing
        ]


RANKED = np.arange(1, 21, dtype=np.int64)  # chunk ids 1..20, best first
SCORES = np.linspace(20.0, 1.0, 20)


async def test_a_broad_filter_is_answered_by_the_first_stage_alone() -> None:
    check = PassingIds({n for n in range(1, 21) if n % 2})  # half pass
    kept = await check_in_stages(RANKED, SCORES, 3, 9, check)
    assert check.asked == [list(range(1, 10))]  # the first nine, and no more
    assert [c.chunk_id for c in kept] == [1, 3, 5, 7, 9]
    assert [c.score for c in kept] == [SCORES[n - 1] for n in (1, 3, 5, 7, 9)]


async def test_a_narrow_filter_checks_the_rest_in_one_more_step_keeping_the_order() -> None:
    check = PassingIds({4, 12, 17, 20})
    kept = await check_in_stages(RANKED, SCORES, 3, 9, check)
    assert check.asked == [list(range(1, 10)), list(range(10, 21))]
    assert [c.chunk_id for c in kept] == [4, 12, 17, 20]  # every passing one, in rank order


async def test_fewer_ranked_than_the_first_stage_is_one_step() -> None:
    check = PassingIds(set())
    assert await check_in_stages(RANKED[:5], SCORES[:5], 3, 9, check) == []
    assert check.asked == [[1, 2, 3, 4, 5]]
