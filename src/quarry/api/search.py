"""Search a project."""

from __future__ import annotations

from fastapi import APIRouter

from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.search.models import SearchRequest, SearchResponse
from quarry.tenancy.models import Role

router = APIRouter(
    prefix="/projects/{project}",
    tags=["search"],
    responses=problem_responses(401, 404, 422, 503),
)


@router.post(
    "/search",
    summary="Search a project's chunks: BM25, vector kNN, or both fused",
    description=(
        "Modes: `bm25` (Okapi BM25 over the project's analysed terms), `vector` (cosine kNN "
        "over the configured embedding model's vectors, HNSW), `hybrid` (both, fused: by "
        "default the retrievers' z-scores weighted by how much they agree on this query, or "
        "weighted reciprocal rank fusion with `fusion: rrf`). Hybrid searches are reranked "
        "by the configured reranker (by default late interaction with the bundled model's "
        "stored token vectors) unless `rerank` is false; bm25 and vector searches only when "
        "`rerank` is true. Documents still being indexed are not searchable yet; "
        "`search_metadata.documents_indexing` counts them."
    ),
)
async def search(
    project: ProjectRef, body: SearchRequest, rt: RuntimeDep, me: PrincipalDep
) -> SearchResponse:
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.search.search(found.id, body)
