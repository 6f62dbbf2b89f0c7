"""Documents in a project: upload, text, URL; status, chunks, delete, retry, reindex."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from quarry.api.deps import PrincipalDep, ProjectRef, RuntimeDep
from quarry.api.errors import problem, problem_responses
from quarry.errors import DocumentError, InvalidInput
from quarry.ingest.documents import (
    MAX_EXTERNAL_ID_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS,
    Intake,
    text_source,
)
from quarry.ingest.fetch import fetch
from quarry.ingest.models import ChunkView, Document, ProjectCounts, Rejection, Status, Submission
from quarry.ingest.source import Source
from quarry.tenancy.models import Role
from quarry.validation import Body, unstorable, utc

router = APIRouter(
    prefix="/projects/{project}",
    tags=["documents"],
    responses=problem_responses(401, 403, 404, 422),
)
DocumentId = Annotated[uuid.UUID, Path(description="the document's id")]


Tag = Annotated[str, StringConstraints(max_length=MAX_TAG_CHARS)]


class Batch(BaseModel):
    documents: list[Submission] = Field(
        description="accepted: created, updated, metadata_updated or unchanged"
    )
    rejected: list[Rejection] = Field(
        description="refused, each with its reason (when none is accepted, the answer is "
        "instead an error, 413, 415 or 422, whose `rejected` lists them)"
    )


class TextDocument(Body):
    text: str = Field(min_length=1)
    title: str = Field(default="", max_length=1000)
    external_id: str | None = Field(
        default=None,
        max_length=MAX_EXTERNAL_ID_BYTES,
        description="at most 2048 bytes in UTF-8; default: the text's SHA-256",
    )
    format: str = Field(default="txt", description="how to read the text: txt, md, html, ...")
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)

    def source(self) -> Source:
        return text_source(
            self.text,
            external_id=self.external_id,
            title=self.title,
            fmt=self.format,
            metadata=self.metadata,
            tags=tuple(self.tags),
        )


# The most documents one POST .../documents/texts may carry.
MAX_TEXTS = 1000


class TextDocuments(Body):
    documents: list[TextDocument] = Field(
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"up to {MAX_TEXTS} documents, each as for POST .../documents/text",
    )


class UrlDocument(Body):
    url: str = Field(
        max_length=4096,
        description="an http:// or https:// URL on a public address (or in "
        "QUARRY_FETCH_ALLOWED_NETWORKS)",
    )
    title: str = Field(default="", max_length=1000)
    external_id: str | None = Field(
        default=None,
        max_length=MAX_EXTERNAL_ID_BYTES,
        description="at most 2048 bytes in UTF-8; default: the url",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class DocumentChanges(Body):
    # Anything else (a title, the text) would change what is indexed: a new submission.
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] | None = Field(
        default=None, description="the document's metadata from now on (replaces it whole)"
    )
    tags: list[Tag] | None = Field(
        default=None, max_length=MAX_TAGS, description="the document's tags from now on"
    )

    @model_validator(mode="after")
    def _something(self) -> DocumentChanges:
        if self.metadata is None and self.tags is None:
            raise ValueError("give metadata, tags or both")
        return self


class DocumentPage(BaseModel):
    documents: list[Document]
    counts: ProjectCounts
    next: str | None = Field(description="pass as `before` for the next page")


class Count(BaseModel):
    count: int


@router.post(
    "/documents",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload files (multipart); each is indexed by a background job (editor)",
    response_model=Batch,
    responses=problem_responses(413, 415),
)
async def upload(
    request: Request,
    project: ProjectRef,
    rt: RuntimeDep,
    me: PrincipalDep,
    files: Annotated[list[UploadFile], File(description="one or more files")],
    metadata: Annotated[str | None, Form(description="a JSON object for every file")] = None,
    tags: Annotated[str | None, Form(description="comma-separated tags")] = None,
    external_id: Annotated[
        str | None, Form(description="only with one file; default: the file name")
    ] = None,
) -> Any:
    found = await rt.projects.resolve(me, project, Role.editor)
    meta = _metadata(metadata)
    tag_list = tuple(t.strip() for t in (tags or "").split(",") if t.strip())
    if external_id is not None and len(files) != 1:
        raise InvalidInput("external_id can only be given with a single file", field="external_id")
    intake = Intake(rt.documents, found.id)
    for upload_file in files:
        name = upload_file.filename or "upload"
        try:
            rt.documents.check_size(name, upload_file.size or 0)  # before reading it
        except DocumentError as exc:
            intake.refuse(name, exc)
            continue
        source = Source(
            data=await upload_file.read(),
            name=name,
            external_id=external_id or name,
            kind="upload",
            media_type=upload_file.content_type,
            metadata=meta,
            tags=tag_list,
        )
        await intake.add(name, source)
    return await _answer(request, intake)


async def _answer(request: Request, intake: Intake) -> Batch | JSONResponse:
    """What a request's documents came to; a problem naming every refusal if none was
    accepted."""
    await intake.finish()
    rejected = [
        Rejection(name=name, code=exc.code, detail=exc.detail) for name, exc in intake.refused
    ]
    if intake.refused and not intake.accepted:
        return _all_refused(request, rejected, {exc.status for _, exc in intake.refused})
    return Batch(documents=[s for _, s in intake.accepted], rejected=rejected)


def _all_refused(request: Request, rejected: list[Rejection], statuses: set[int]) -> JSONResponse:
    """Nothing in the upload was accepted: one problem naming every file and its reason. Its
    code and status are the files' when they share one reason; for mixed reasons, 422
    ``no_document_accepted`` (each file's own code is in ``rejected``)."""
    codes = {r.code for r in rejected}
    return problem(
        request,
        statuses.pop() if len(statuses) == 1 and len(codes) == 1 else 422,
        codes.pop() if len(codes) == 1 else "no_document_accepted",
        "No document accepted",
        "; ".join(f"{r.name}: {r.detail}" for r in rejected),
        rejected=[r.model_dump() for r in rejected],
    )


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, a number past 4300 digits, deep nesting
        raise InvalidInput("metadata must be a JSON object", field="metadata") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object", field="metadata")
    found = unstorable(value, "metadata")  # every file's: the whole upload's error
    if found:
        raise InvalidInput(f"{found[0]}: {found[1]}", field=found[0])
    return value


@router.post(
    "/documents/text",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Add a document from text (editor)",
    responses=problem_responses(413, 415),
)
async def add_text(
    project: ProjectRef, body: TextDocument, rt: RuntimeDep, me: PrincipalDep
) -> Submission:
    found = await rt.projects.resolve(me, project, Role.editor)
    return await rt.documents.submit(found.id, body.source())


@router.post(
    "/documents/texts",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Add many documents from text in one request (editor)",
    description=(
        "Each document is accepted or refused on its own, as by POST .../documents/text; "
        "refused ones are listed with their reason (named by external_id, else "
        "`documents.<position>`). The whole request is submitted in batches: far less work "
        "per document than a request each. A request that is not valid as a whole (a "
        "missing `text`, more than 1000 documents) is a 422 and stores nothing."
    ),
    response_model=Batch,
    responses=problem_responses(413, 415),
)
async def add_texts(
    request: Request, project: ProjectRef, body: TextDocuments, rt: RuntimeDep, me: PrincipalDep
) -> Any:
    found = await rt.projects.resolve(me, project, Role.editor)
    intake = Intake(rt.documents, found.id)
    for position, doc in enumerate(body.documents):
        await intake.add(doc.external_id or f"documents.{position}", doc.source())
    return await _answer(request, intake)


@router.post(
    "/documents/url",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Fetch a URL and add it as a document (editor)",
    description=(
        "The server fetches the URL now (following up to 5 redirects, within "
        "QUARRY_FETCH_TIMEOUT and QUARRY_MAX_UPLOAD_BYTES) and queues the document. Only "
        "public addresses are fetched: a URL, or a redirect, whose host is loopback, "
        "private, link-local or otherwise not on the public internet is a 422 "
        "`url_not_allowed` unless QUARRY_FETCH_ALLOWED_NETWORKS holds it, and so is a host "
        "name that does not resolve (one answer for both, so that it does not tell which "
        "internal names exist). A 404, or a host that refuses or drops the connection, is "
        "a 422 `url_fetch_failed`; a timeout `url_timeout`."
    ),
    responses=problem_responses(413, 415),
)
async def add_url(
    project: ProjectRef, body: UrlDocument, rt: RuntimeDep, me: PrincipalDep
) -> Submission:
    found = await rt.projects.resolve(me, project, Role.editor)
    fetched = await fetch(
        body.url,
        timeout_s=rt.settings.fetch_timeout,
        max_bytes=rt.settings.max_upload_bytes,
        allowed_networks=rt.settings.fetch_allowed_networks,
    )
    source = Source(
        data=fetched.data,
        name=fetched.filename,
        external_id=body.external_id or body.url,
        kind="url",
        media_type=fetched.media_type,
        title=body.title,
        metadata={"url": fetched.final_url, **body.metadata},
        tags=tuple(body.tags),
    )
    return await rt.documents.submit(found.id, source)


@router.get("/documents", summary="List documents, newest first (status=failed: dead letters)")
async def list_documents(
    project: ProjectRef,
    rt: RuntimeDep,
    me: PrincipalDep,
    status: Annotated[Status | None, Query(description="only documents in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[str | None, Query(description="the `next` of the previous page")] = None,
) -> DocumentPage:
    found = await rt.projects.resolve(me, project)
    # Counts first: the page read after them is at least as far along, so a client that
    # waits until the counts show nothing pending finds every listed document settled.
    counts = await rt.documents.counts(found.id)
    documents = await rt.documents.list_page(
        found.id, status=status, limit=limit, before=_cursor(before)
    )
    last = documents[-1] if len(documents) == limit else None
    return DocumentPage(
        documents=documents,
        counts=counts,
        next=_encode_cursor(last.created_at, last.id) if last else None,
    )


def _encode_cursor(created_at: datetime, document_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{document_id}".encode()).decode()


def _cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    if raw is None:
        return None
    try:
        created, _, ident = base64.urlsafe_b64decode(raw.encode()).decode().partition("|")
        return utc(datetime.fromisoformat(created)), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("before is not a cursor this API returned", field="before") from None


@router.get("/documents/{document_id}", summary="A document's status, error and attempts")
async def get_document(
    project: ProjectRef, document_id: DocumentId, rt: RuntimeDep, me: PrincipalDep
) -> Document:
    found = await rt.projects.resolve(me, project)
    return await rt.documents.get(found.id, document_id)


@router.get("/documents/{document_id}/chunks", summary="A document's chunks, in order")
async def get_chunks(
    project: ProjectRef, document_id: DocumentId, rt: RuntimeDep, me: PrincipalDep
) -> list[ChunkView]:
    found = await rt.projects.resolve(me, project)
    return await rt.documents.chunks(found.id, document_id)


@router.patch(
    "/documents/{document_id}",
    summary="Replace a document's metadata or tags in place (editor)",
    description=(
        "What describes the document changes at once, for searches' filters too; its "
        "content, version and chunks stay as they are, and nothing is re-indexed. Each of "
        "`metadata` and `tags` that is given replaces the document's whole."
    ),
)
async def describe_document(
    project: ProjectRef,
    document_id: DocumentId,
    body: DocumentChanges,
    rt: RuntimeDep,
    me: PrincipalDep,
) -> Document:
    found = await rt.projects.resolve(me, project, Role.editor)
    return await rt.documents.describe(
        found.id, document_id, metadata=body.metadata, tags=body.tags
    )


@router.delete(
    "/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a document with its chunks and statistics (editor)",
)
async def delete_document(
    project: ProjectRef, document_id: DocumentId, rt: RuntimeDep, me: PrincipalDep
) -> None:
    found = await rt.projects.resolve(me, project, Role.editor)
    await rt.documents.delete(found.id, document_id)


@router.post(
    "/documents/{document_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue a failed document again (editor)",
)
async def retry_document(
    project: ProjectRef, document_id: DocumentId, rt: RuntimeDep, me: PrincipalDep
) -> Count:
    found = await rt.projects.resolve(me, project, Role.editor)
    return Count(count=await rt.documents.retry(found.id, [document_id]))


@router.post(
    "/documents/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Queue every failed document again (editor)",
)
async def retry_all(project: ProjectRef, rt: RuntimeDep, me: PrincipalDep) -> Count:
    found = await rt.projects.resolve(me, project, Role.editor)
    return Count(count=await rt.documents.retry(found.id, None))


@router.post(
    "/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Re-embed every document with the configured embedding model (owner)",
)
async def reindex(project: ProjectRef, rt: RuntimeDep, me: PrincipalDep) -> Count:
    found = await rt.projects.resolve(me, project, Role.owner)
    return Count(count=await rt.documents.reindex(found.id))
