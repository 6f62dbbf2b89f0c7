"""Ask a project a question."""

from __future__ import annotations

from fastapi import APIRouter

from quarry.answers.models import AskRequest, AskResponse
from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.tenancy.models import Role

router = APIRouter(
    prefix="/projects/{project}",
    tags=["answers"],
    responses=problem_responses(401, 404, 422, 502, 503),
)


@router.post(
    "/ask",
    summary="Answer a question from the project's documents, with citations",
    description=(
        "Searches the project, builds numbered passages under the token budget (near-duplicates "
        "out, touching chunks merged, at most two chunks a document, each document's best "
        "chunk first), and answers with the gateway's generation role. Every [n] in the answer "
        "names a passage in `citations` (a group such as [1, 2] is written [1][2]); numbers the "
        "model made up are removed and listed in `unknown_citations`. When nothing relevant "
        "is found, `answered` is false and no model is called. The budget may be lowered per "
        "request, not raised."
    ),
)
async def ask(
    project: ProjectRef, body: AskRequest, rt: RuntimeDep, me: PrincipalDep
) -> AskResponse:
    found = await rt.projects.resolve(me, project, Role.viewer)
    return await rt.answers.ask(found.id, me.user_id, body)
