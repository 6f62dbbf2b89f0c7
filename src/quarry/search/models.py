"""What a search asks for and what it returns, as the API, the CLI and the eval harness see it."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from quarry.search.fusion import Method
from quarry.validation import Body, Timestamp

MAX_QUERY_CHARS = 4000
MAX_K = 200
MAX_CANDIDATES = 1000

MAX_FILTER_FIELDS = 64  # metadata fields one filter may name
MAX_FILTER_VALUES = 1000  # values in all of a filter's metadata conditions together

Scalar = Annotated[str, StringConstraints(max_length=4096)] | int | float | bool
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]


class Mode(StrEnum):
    bm25 = "bm25"
    vector = "vector"
    hybrid = "hybrid"


class Range(BaseModel):
    """Bounds on a metadata value; numbers compare as numbers, strings (ISO dates) as text."""

    model_config = ConfigDict(extra="forbid")

    gt: Scalar | None = None
    gte: Scalar | None = None
    lt: Scalar | None = None
    lte: Scalar | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Range:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_: list[Scalar] = Field(alias="in", min_length=1, max_length=MAX_FILTER_VALUES)


RANGE_BOUNDS = ("gt", "gte", "lt", "lte")
SCALAR = "a string of at most 4096 characters, a number or a boolean"


def _one_error(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """A condition that fits none of its shapes is one error at its field, saying what was
    wrong with the shape it looks like, where pydantic's union gives an error per shape tried,
    each under a path of pydantic's own (``function-after[_not_empty(), Range]``)."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("metadata_condition", _what_is_wrong(value)) from None


def _what_is_wrong(value: object) -> str:
    if not isinstance(value, dict):
        return (
            f"a condition is a value ({SCALAR}), {{'in': [values]}} or a range of "
            f"{', '.join(RANGE_BOUNDS)}"
        )
    if "in" in value:
        if set(value) != {"in"}:
            return "an 'in' condition takes nothing but 'in'"
        values = value["in"]
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_FILTER_VALUES:
            return f"'in' takes a list of 1 to {MAX_FILTER_VALUES} values"
        return f"each value of 'in' is {SCALAR}"
    unknown = sorted(set(value) - set(RANGE_BOUNDS))
    if unknown:
        return f"a range takes {', '.join(RANGE_BOUNDS)}, not {', '.join(map(str, unknown))}"
    if not value:
        return f"a range needs at least one of {', '.join(RANGE_BOUNDS)}"
    return f"each bound of a range is {SCALAR}"


MetadataCondition = Annotated[Scalar | AnyOf | Range, WrapValidator(_one_error)]


class Filters(BaseModel):
    """Which chunks may be returned. Every given condition must hold (they are ANDed)."""

    model_config = ConfigDict(extra="forbid")

    document_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=10_000, description="only chunks of these documents"
    )
    metadata: dict[MetadataKey, MetadataCondition] | None = Field(
        default=None,
        max_length=MAX_FILTER_FIELDS,
        description=(
            "per metadata field: a value (equality), {'in': [values]}, or a range "
            f"{{'gte': .., 'lt': ..}}; at most {MAX_FILTER_FIELDS} fields and "
            f"{MAX_FILTER_VALUES} values in all, strings of at most 4096 characters"
        ),
    )
    tags: list[str] | None = Field(
        default=None, max_length=100, description="documents that carry every one of these tags"
    )
    created_after: Timestamp | None = Field(
        default=None, description="documents created at or after this time (no zone: UTC)"
    )
    created_before: Timestamp | None = Field(
        default=None, description="documents created before this time (no zone: UTC)"
    )
    updated_after: Timestamp | None = Field(
        default=None, description="documents updated at or after this time (no zone: UTC)"
    )
    updated_before: Timestamp | None = Field(
        default=None, description="documents updated before this time (no zone: UTC)"
    )

    @model_validator(mode="after")
    def _bounded(self) -> Filters:
        # Each value becomes a condition of the statement: bound them all, not each list.
        values = sum(_values(condition) for condition in (self.metadata or {}).values())
        if values > MAX_FILTER_VALUES:
            raise ValueError(
                f"metadata conditions hold {values} values; at most {MAX_FILTER_VALUES} in all"
            )
        return self


def _values(condition: MetadataCondition) -> int:
    if isinstance(condition, AnyOf):
        return len(condition.in_)
    if isinstance(condition, Range):
        return sum(
            bound is not None
            for bound in (condition.gt, condition.gte, condition.lt, condition.lte)
        )
    return 1


class Weights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bm25: float = Field(default=1.0, ge=0, le=10)
    vector: float = Field(default=1.0, ge=0, le=10)


class SearchRequest(Body):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    mode: Mode = Mode.hybrid
    k: int = Field(default=10, ge=1, le=MAX_K, description="how many hits to return")
    candidates: int | None = Field(
        default=None,
        ge=1,
        le=MAX_CANDIDATES,
        description="how deep each retriever looks before fusion (default: settings)",
    )
    filters: Filters | None = None
    fusion: Method = Field(
        default=Method.adaptive,
        description="adaptive: weighted z-scores, the dense side's weight scaled by how much "
        "the retrievers agree on this query; rrf: weighted reciprocal rank fusion",
    )
    weights: Weights | None = Field(
        default=None, description="per-retriever fusion weights (default: chosen per query)"
    )
    rerank: bool | None = Field(
        default=None,
        description="rerank the fused candidates; default: in hybrid mode when a reranker is "
        "configured (late interaction with the bundled model, unless QUARRY_RERANKER says "
        "otherwise), never in bm25 or vector mode; true with none configured is a 503",
    )
    per_document: bool = Field(
        default=False,
        description="at most one hit per document: its best chunk; the page holds k documents "
        "where the project has them (the retrievers read deeper when long documents fill "
        "their candidates)",
    )

    @model_validator(mode="after")
    def _query_has_text(self) -> SearchRequest:
        if not self.query.strip():
            raise ValueError("query is blank")
        return self


class Hit(BaseModel):
    chunk_id: int
    document_id: uuid.UUID
    document_title: str
    external_id: str
    text: str
    score: float = Field(
        description="the final score: fused, or when reranked the reranker's (for "
        "late_interaction, blended with the fused score); hits past the rerank depth keep "
        "their fused order, their scores moved below the reranked ones"
    )
    ranks: dict[str, int] = Field(
        description="1-based rank in each retriever that found it; when reranked, 'fused' too"
    )
    scores: dict[str, float] = Field(
        description="each retriever's own score; when reranked, the reranker's as 'rerank'"
    )
    page: int | None
    char_start: int
    char_end: int
    chunk_index: int
    highlight: str = Field(
        description="a short snippet as HTML: the text escaped, the query's terms in <mark>"
    )


class SearchMetadata(BaseModel):
    mode: Mode
    query_terms: list[str] = Field(description="the query as BM25 saw it, after analysis")
    highlight_terms: list[str] = Field(
        default_factory=list,
        description="the terms highlights mark: query_terms, and the query's terms as written "
        "where the analyzer changed their spelling (english: a Greek letter to its name, a "
        "British spelling to the American), since a snippet shows the text as stored",
    )
    candidates: dict[str, int] = Field(description="hits each retriever returned")
    fusion: Method
    weights: dict[str, float] = Field(
        description="the fusion weights used, and under 'rerank' the weight of a reranker "
        "whose scores were blended with the fused ones (late_interaction)"
    )
    agreement: float | None = Field(
        description="share of each retriever's top 10 documents the other found (hybrid)"
    )
    reranked: bool
    bm25_scan: Literal["unfiltered", "post_filter", "filtered"] | None = Field(
        default=None,
        description="how BM25 answered: without a filter; with one, by checking its "
        "unfiltered best hits against the filter (enough passed); or by reading the postings "
        "of the chunks the filter lets compete",
    )
    vector_scan: Literal["hnsw", "hnsw_widened", "exact"] | None = Field(
        default=None,
        description="how the vector retriever answered: its HNSW index; the index searched "
        "again more widely, as a filter or other projects left too few of this project's "
        "chunks among the nearest; or an exact scan of the project's vectors",
    )
    timings_ms: dict[str, float]
    documents_indexing: int = Field(description="documents not yet searchable")


class SearchResponse(BaseModel):
    hits: list[Hit]
    search_metadata: SearchMetadata
