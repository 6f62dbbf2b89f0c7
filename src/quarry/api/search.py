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
        "over the configured embedding model's vectors, HNSW), `hybrid` (both, fused by "
        "weighted reciprocal rank fusion; without explicit `weights`, each retriever's weight "
        "adapts to how decisive its scores are for this query). With a reranker configured, "
        "the fused candidates are reranked unless `rerank` is false. Documents still being "
        "indexed are not searchable yet; `search_metadata.documents_indexing` counts them."
    ),
)
async def search(
    project: ProjectRef, body: SearchRequest, rt: RuntimeDep, me: PrincipalDep
) -> SearchResponse:
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.search.search(found.id, body)
