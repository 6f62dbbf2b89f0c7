"""Document summaries: a rolling summary per document, written after indexing (role
``maintenance``) when ``document_summaries`` is on.

The document's chunks are read in order, in windows that fit the model's prompt; each window
updates the summary so far, so a document of any length costs one call per window and the
summary stays short. The summary is saved for the version it was made from: the context
builder uses only a summary of the indexed text (``documents.summaries``).
"""

from __future__ import annotations

import uuid

import structlog

from quarry.db.database import Database
from quarry.gateway.gateway import Gateway

log = structlog.get_logger(__name__)
ROLE = "maintenance"
WINDOW_TOKENS = 1200  # document text per call
SUMMARY_TOKENS = 120  # the summary's length, at most
INSTRUCTIONS = (
    "You write a short summary of a document for a search engine's context. Keep its subject, "
    "main claims, numbers and names. Answer with the summary only, in at most 80 words."
)


def _prompt(title: str, summary: str, section: str, last: bool) -> str:
    head = f"Document: {title}\n\n" if title else ""
    so_far = f"Summary of the earlier parts: {summary}\n\n" if summary else ""
    part = "The last part" if last else "The next part"
    return f"{head}{so_far}{part} of the document:\n{section}\n\nThe summary of the document:"


async def summarise_document(
    db: Database, gateway: Gateway, project_id: uuid.UUID, document_id: uuid.UUID
) -> bool:
    """Write the document's summary; False when there is nothing to summarise (the document
    is gone, not indexed, or already summarised at this version)."""
    document = await db.fetch_one("documents.get", project_id=project_id, document_id=document_id)
    if document is None or document["status"] != "complete" or document["indexed_hash"] is None:
        return False
    if document["summary_hash"] == document["indexed_hash"]:
        return False
    chunks = await db.fetch_all(
        "chunks.list_for_document", project_id=project_id, document_id=document_id
    )
    model = gateway.chain(ROLE)[0].name
    await gateway.ready(model)
    windows: list[list[str]] = [[]]
    used = 0
    end = 0  # chunks overlap: each adds only the text past the previous one's end
    for chunk in chunks:
        text = chunk["text"][max(0, end - chunk["char_start"]) :]
        end = max(end, chunk["char_end"])
        if not text.strip():
            continue
        tokens = gateway.count_tokens(model, text)
        if windows[-1] and used + tokens > WINDOW_TOKENS:
            windows.append([])
            used = 0
        windows[-1].append(text)
        used += tokens
    summary = ""
    for i, window in enumerate(w for w in windows if w):
        done = await gateway.generate(
            ROLE,
            [
                {"role": "system", "content": INSTRUCTIONS},
                {
                    "role": "user",
                    "content": _prompt(
                        document["title"], summary, "".join(window), i == len(windows) - 1
                    ),
                },
            ],
            project_id=project_id,
            max_tokens=SUMMARY_TOKENS,
            temperature=0,
        )
        summary = done.text.strip() or summary
    if not summary:
        return False
    saved = await db.execute(
        "documents.save_summary",
        project_id=project_id,
        document_id=document_id,
        summary=summary,
        indexed_hash=document["indexed_hash"],
    )
    log.info("document summarised", document_id=str(document_id), windows=len(windows))
    return bool(saved)
