"""Model usage of a project: tokens and cost by model and day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem_responses
from quarry.gateway.accounting import usage_by_model_day
from quarry.tenancy.models import Role

router = APIRouter(
    prefix="/projects/{project}",
    tags=["usage"],
    responses=problem_responses(401, 404, 422),
)


class UsageDay(BaseModel):
    day: date = Field(description="the UTC day")
    model: str = Field(description="the configured model name")
    calls: int = Field(description="provider attempts, failed and cached ones included")
    errors: int
    cached: int = Field(description="calls answered from the response cache")
    input_tokens: int
    output_tokens: int
    cost: float | None = Field(
        description="USD; null when none of the calls had a price (an unpriced model)"
    )
    unpriced: int = Field(description="calls whose cost is unknown (not counted in cost)")


class UsageReport(BaseModel):
    since: datetime
    days: list[UsageDay]


@router.get(
    "/usage",
    summary="Model tokens and cost by model and day",
    description=(
        "Every model call made for the project (answers, analysis, maintenance), one row per "
        "model and UTC day: calls, errors, cache hits, tokens and cost."
    ),
)
async def project_usage(
    project: ProjectRef,
    rt: RuntimeDep,
    me: PrincipalDep,
    days: Annotated[int, Query(ge=1, le=3660, description="how many days back")] = 30,
) -> UsageReport:
    found = await rt.projects.resolve(me, project, Role.viewer)
    since = datetime.now(UTC) - timedelta(days=days)
    rows = await usage_by_model_day(rt.db, project_id=found.id, since=since)
    return UsageReport(since=since, days=[UsageDay(**vars(row)) for row in rows])
