"""The context builder on hits it is given, counted with a real tokenizer (the bundled MiniLM's:
cheap to load; the builder takes any model's count)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quarry.answers.context import Budget, ContextBuilder, naive_context
from quarry.answers.models import AskBudget, BudgetLimits
from quarry.errors import BudgetOverLimit
from quarry.ingest.embedders import load_tokenizer
from quarry.modelfiles import embedding_model_path
from quarry.search.models import Hit
from quarry.settings import Settings

_path = embedding_model_path(Settings(data_dir=Path("/nonexistent")))
assert _path is not None
TOKENIZER = load_tokenizer(_path / "tokenizer.json")


def count(text: str) -> int:
    return len(TOKENIZER.encode(text, add_special_tokens=False).ids)


DOC_A, DOC_B, DOC_C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
TEXT_A = (
    "Solar panels convert sunlight into electricity. They work best in direct sun. "
    "Output falls on cloudy days but does not stop. Batteries store the surplus for the night."
)


def hit(
    doc: uuid.UUID, chunk_id: int, start: int, end: int, text: str | None = None, title: str = "Doc"
) -> Hit:
    return Hit(
        chunk_id=chunk_id,
        document_id=doc,
        document_title=title,
        external_id="",
        text=TEXT_A[start:end] if text is None else text,
        score=1.0,
        ranks={},
        scores={},
        page=None,
        char_start=start,
        char_end=end,
        chunk_index=chunk_id,
        highlight="",
    )


def builder(**kw) -> ContextBuilder:
    return ContextBuilder(count, **kw)


def test_overlapping_chunks_of_a_document_merge_into_one_passage() -> None:
    first = hit(DOC_A, 1, 0, 80, title="Energy")
    second = hit(DOC_A, 2, 60, len(TEXT_A), title="Energy")  # 20 characters of overlap
    context = builder().build([second, first], Budget(total=1000, answer_reserve=100))
    [passage] = context.passages
    assert passage.text == TEXT_A
    assert passage.chunk_ids == [1, 2]  # in the document's order
    assert passage.rank == 1
    assert passage.number == 1
    assert context.render() == f"[1] Energy\n{TEXT_A}"
    assert context.tokens == count(context.render())


def test_a_text_that_begins_with_its_title_is_not_given_it_twice() -> None:
    first = hit(DOC_A, 1, 0, 80, title="Solar panels")
    context = builder().build([first], Budget())
    assert context.render() == f"[1] {TEXT_A[:80]}"


def test_chunks_that_do_not_touch_stay_apart() -> None:
    first = hit(DOC_A, 1, 0, 40)
    third = hit(DOC_A, 3, 100, 150)
    context = builder().build([first, third], Budget(total=1000, answer_reserve=100))
    assert [p.chunk_ids for p in context.passages] == [[1], [3]]


def test_exact_and_embedding_duplicates_are_dropped_with_the_reason() -> None:
    a = hit(DOC_A, 1, 0, 40, text="Wind turbines make electricity.")
    b = hit(DOC_B, 2, 0, 40, text="Wind  turbines make ELECTRICITY.")  # the same, re-spaced
    c = hit(DOC_C, 3, 0, 40, text="Turbines driven by wind generate power.")
    d = hit(DOC_C, 4, 50, 90, text="An unrelated passage about bread.")
    unit = np.array([1.0, 0.0], dtype=np.float32)
    vectors = {
        1: unit,
        3: np.array([0.99, 0.141], dtype=np.float32),
        4: np.array([0, 1.0], dtype=np.float32),
    }
    context = builder(duplicate_threshold=0.95).build([a, b, c, d], Budget(), vectors)
    assert [p.chunk_ids for p in context.passages] == [[1], [4]]
    reasons = {d.chunk_ids: (d.reason, d.detail) for d in context.dropped}
    assert reasons[(2,)] == ("near_duplicate", "same text as rank 1")
    assert reasons[(3,)] == ("near_duplicate", "embedding like rank 1's")


def test_one_document_cannot_crowd_out_the_rest() -> None:
    many = [hit(DOC_A, i, i * 100, i * 100 + 50, text=f"Part {i} of A.") for i in range(5)]
    other = hit(DOC_B, 99, 0, 20, text="The only part of B.")
    context = builder(max_per_document=2).build([*many, other], Budget())
    docs = [p.document_id for p in context.passages]
    assert docs.count(DOC_A) == 2
    assert DOC_B in docs
    capped = [d for d in context.dropped if d.reason == "per_document_cap"]
    assert len(capped) == 3


def test_coverage_first_when_the_budget_is_tight() -> None:
    a1 = hit(DOC_A, 1, 0, 100, text="alpha " * 40)
    a2 = hit(DOC_A, 2, 200, 300, text="beta " * 40)
    b1 = hit(DOC_B, 3, 0, 100, text="gamma " * 40)
    one = count("[1] Doc\n" + "alpha " * 40)
    budget = Budget(total=2 * one + 10 + 100, answer_reserve=100, evidence_share=1.0)
    context = builder().build([a1, a2, b1], budget)
    # the naive order would spend the budget on A twice; coverage takes B's best instead
    assert [p.chunk_ids for p in context.passages] == [[1], [3]]
    assert [p.number for p in context.passages] == [1, 2]
    assert [d.reason for d in context.dropped] == ["over_budget"]
    naive = naive_context([a1, a2, b1], budget, count)
    assert [p.chunk_ids for p in naive.passages] == [[1], [2]]


def test_nothing_fits() -> None:
    big = hit(DOC_A, 1, 0, 100, text="word " * 500)
    context = builder().build([big], Budget(total=200, answer_reserve=100))
    assert context.passages == []
    assert context.tokens == 0
    assert context.render() == ""
    assert context.dropped[0].reason == "over_budget"


@pytest.mark.parametrize(
    "budget", [dict(total=0), dict(total=100, answer_reserve=100), dict(evidence_share=0)]
)
def test_a_budget_that_leaves_nothing_is_refused(budget) -> None:
    with pytest.raises(ValueError, match=r"budget|evidence_share"):
        Budget(**budget)


words = st.lists(
    st.sampled_from(["sun", "wind", "power", "cells", "grid", "of", "the"]), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(words, min_size=1, max_size=12),
    docs=st.lists(st.integers(0, 3), min_size=12, max_size=12),
    total=st.integers(60, 800),
    summarised=st.sets(st.integers(0, 3)),
)
def test_the_budget_is_never_exceeded_and_nothing_is_lost(texts, docs, total, summarised) -> None:
    ids = [uuid.UUID(int=i + 1) for i in range(4)]
    hits = []
    offset = 0
    for i, ws in enumerate(texts):
        text = " ".join(ws)
        hits.append(hit(ids[docs[i]], i, offset, offset + len(text), text=text))
        offset += len(text) + 5  # chunks of a document never touch here
    budget = Budget(total=total, answer_reserve=50)
    summaries = {ids[i]: "a short summary of grid power" for i in summarised}
    context = builder().build(hits, budget, summaries=summaries)
    assert context.tokens <= budget.evidence_tokens
    assert context.tokens == (count(context.render()) if context.passages else 0)
    assert [p.number for p in context.passages] == list(range(1, len(context.passages) + 1))
    assert [p.rank for p in context.passages] == sorted(p.rank for p in context.passages)
    placed = {c for p in context.passages for c in p.chunk_ids}
    left_out = {c for d in context.dropped for c in d.chunk_ids}
    assert placed | left_out == {h.chunk_id for h in hits}
    assert not placed & left_out
    for passage in context.passages:
        assert not passage.summary or passage.document_id in summaries


def test_a_summary_stands_in_for_a_document_too_big_for_the_budget_left() -> None:
    a1 = hit(DOC_A, 1, 0, 100, text="alpha " * 30, title="Small")
    b1 = hit(DOC_B, 2, 0, 100, text="gamma " * 200, title="Big")
    b2 = hit(DOC_B, 3, 100, 200, text="delta " * 5, title="Big")
    budget = Budget(total=200, answer_reserve=50, evidence_share=1.0)
    without = builder().build([a1, b1, b2], budget)
    assert 2 not in {c for p in without.passages for c in p.chunk_ids}  # never fits
    summary = "Big is about gamma rays and their sources."
    context = builder().build([a1, b1, b2], budget, summaries={DOC_B: summary, DOC_A: "unused"})
    first, second = context.passages
    assert (first.chunk_ids, first.summary) == ([1], False)  # A's chunk fits: no summary
    assert second.summary
    assert second.text == summary
    assert second.chunk_ids == []
    assert second.render() == f"[2] Big (summary)\n{summary}"
    assert {d.chunk_ids: d.reason for d in context.dropped} == {
        (2,): "replaced_by_summary",
        (3,): "replaced_by_summary",
    }
    assert context.tokens <= budget.evidence_tokens


def test_a_request_may_lower_the_configured_budget_not_raise_it() -> None:
    limits = BudgetLimits(total=1024, answer_reserve=128, evidence_share=0.5, history=256)
    assert limits.resolve(AskBudget()) == limits
    lowered = limits.resolve(AskBudget(total=512, history=0))
    assert (lowered.total, lowered.answer_reserve, lowered.history) == (512, 128, 0)
    for asked, field in [
        (AskBudget(total=2048), "budget.total"),
        (AskBudget(evidence_share=0.9), "budget.evidence_share"),
        (AskBudget(total=256, answer_reserve=None), None),
        (AskBudget(total=300, answer_reserve=128), None),
    ]:
        if field is None:
            assert limits.resolve(asked).total == asked.total
            continue
        with pytest.raises(BudgetOverLimit) as refused:
            limits.resolve(asked)
        assert refused.value.extra["field"] == field
    with pytest.raises(BudgetOverLimit, match="must be below"):
        BudgetLimits(total=1024, answer_reserve=512).resolve(AskBudget(total=512))


LONG = (
    "Bread is baked in ovens across the world. Solar panels turn sunlight into electricity. "
    "Wheat grows in fields. Cloudy days lower the panels' output. Rivers flow to the sea. "
    "Yeast makes dough rise."
)


def test_a_long_chunk_is_cut_to_the_sentences_that_match_the_query() -> None:
    long = hit(DOC_A, 1, 0, len(LONG), text=LONG, title="Mixed")
    short = hit(DOC_B, 2, 0, 20, text="Solar power is clean.", title="Short")
    terms = ["solar", "panel", "electr", "cloudi"]  # Postgres english stems
    context = builder(passage_tokens=30).build([long, short], Budget(), query_terms=terms)
    first, second = context.passages
    assert first.text == (
        "… Solar panels turn sunlight into electricity. … Cloudy days lower the panels' output. …"
    )
    assert (first.chunk_ids, first.char_start, first.char_end) == ([1], 0, len(LONG))
    assert second.text == "Solar power is clean."  # short enough already: whole
    whole = builder().build([long, short], Budget(), query_terms=terms)
    assert whole.passages[0].text == LONG  # off unless passage_tokens is set
    assert context.tokens < whole.tokens


def test_a_cut_chunk_is_not_merged_and_a_chunk_matching_nothing_stays_whole() -> None:
    tail = (
        " Solar farms cover hills. Rain falls on the roofs. Snow melts in spring sun. Leaves fall."
    )
    text = LONG + tail
    start = len(LONG) - len("Yeast makes dough rise.")  # b begins inside a: they overlap
    a = hit(DOC_A, 1, 0, len(LONG), text=LONG)
    b = hit(DOC_A, 2, start, len(text), text=text[start:])
    context = builder(passage_tokens=30).build([a, b], Budget(), query_terms=["solar"])
    assert [p.chunk_ids for p in context.passages] == [[1], [2]]  # touching, yet two passages
    nothing = builder(passage_tokens=30).build([a], Budget(), query_terms=["zebra"])
    assert nothing.passages[0].text == LONG
