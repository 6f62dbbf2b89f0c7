"""Packing a project's postings into blocks, in the background.

The write path puts a row per posting in chunk_terms: cheap to write, to delete, to roll back.
A search reads every posting of its terms, and for a term in tens of thousands of chunks the
rows cost Postgres most of a hybrid search's CPU (a tuple, a visibility check and two
aggregate steps each). ``pack`` moves the postings of a project's common terms into
``term_blocks``: up to ``BLOCK_SIZE`` postings per row, as the packed strings a search reads
anyway, so reading them is a copy (migration 0010 has the layout; bench/README.md the
figures). Like an engine's index segments, blocks are made behind the writes, never edited by
them, and merged as they accumulate; a search reads the blocks and what chunk_terms still
holds, so what it finds is the same before, during and after a pack.

A pack is one transaction, one per project at a time:

1. move: the chunk_terms rows of every term with ``MIN_POSTINGS`` or more there, or with
   blocks already, leave for new blocks (rows not yet committed by a writer stay, for the
   next pack);
2. merge: a term's small blocks (under ``BLOCK_SIZE``), when it has several, become one;
3. deletions: blocks that may hold a chunk deleted since it was packed are rewritten without
   it (searches drop such chunks meanwhile, by ``packed_deletions``).

The indexing job queues a pack (one at a time per project) once ``QUARRY_BM25_PACK_CHUNKS``
chunks have been written since the last one. Small projects never reach it, and their search
reads chunk_terms alone, as before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import structlog

from quarry.db.database import Conn, Database
from quarry.search.bm25 import read_int8s

log = structlog.get_logger(__name__)

BLOCK_SIZE = 4096  # postings per block (two strings of 32 KiB)
MIN_POSTINGS = 1024  # a term is packed once it has this many postings in chunk_terms


@dataclass(frozen=True)
class Packed:
    moved: int  # postings moved from chunk_terms into blocks
    blocks: int  # blocks written by the move
    deletions: int  # deleted chunks taken out of the blocks


async def pack(
    db: Database,
    project_id: uuid.UUID,
    *,
    block_size: int = BLOCK_SIZE,
    min_postings: int = MIN_POSTINGS,
) -> Packed:
    """Pack the project's common terms' postings (the module's docstring says how)."""
    async with db.transaction() as conn:
        await db.execute("postings.lock_project", conn, project_id=project_id)
        seen = await db.fetch_one("postings.chunks_since_pack", conn, project_id=project_id)
        assert seen is not None
        moved = await db.fetch_one(
            "postings.move",
            conn,
            project_id=project_id,
            min_postings=min_postings,
            block_size=block_size,
        )
        assert moved is not None
        await db.execute("postings.merge", conn, project_id=project_id, block_size=block_size)
        deletions = await _drop_deleted(db, conn, project_id)
        await db.execute("postings.packed", conn, project_id=project_id, seen=seen["chunks"])
    packed = Packed(int(moved["postings"]), int(moved["blocks"]), deletions)
    log.info(
        "postings packed",
        project_id=str(project_id),
        moved=packed.moved,
        blocks=packed.blocks,
        deletions=packed.deletions,
    )
    return packed


async def _drop_deleted(db: Database, conn: Conn, project_id: uuid.UUID) -> int:
    """Rewrite the blocks that may hold chunks deleted since they were packed, without them."""
    rows = await db.fetch_all("postings.take_deletions", conn, project_id=project_id)
    if not rows:
        return 0
    deleted = np.array(sorted(row["chunk_id"] for row in rows), dtype=np.int64)
    blocks = await db.fetch_all_binary(
        "postings.blocks_spanning", conn, project_id=project_id, chunk_ids=deleted.tolist()
    )
    gone: list[tuple[str, int]] = []
    kept: list[tuple[str, int, int, int, bytes, bytes]] = []
    for block in blocks:
        chunk_ids = read_int8s(block["chunk_ids"])
        live = ~np.isin(chunk_ids, deleted)
        if live.all():
            continue
        gone.append((block["term"], block["first_chunk"]))
        if live.any():
            shapes = read_int8s(block["shapes"])[live]
            chunk_ids = chunk_ids[live]
            kept.append(
                (
                    block["term"],
                    int(chunk_ids.min()),
                    int(chunk_ids.max()),
                    int(chunk_ids.size),
                    chunk_ids.astype(">i8").tobytes(),
                    shapes.astype(">i8").tobytes(),
                )
            )
    if gone:
        await db.execute(
            "postings.drop_blocks",
            conn,
            project_id=project_id,
            terms=[term for term, _ in gone],
            firsts=[first for _, first in gone],
        )
    if kept:
        await db.execute(
            "postings.insert_blocks",
            conn,
            project_id=project_id,
            terms=[k[0] for k in kept],
            firsts=[k[1] for k in kept],
            lasts=[k[2] for k in kept],
            counts=[k[3] for k in kept],
            chunk_ids=[k[4] for k in kept],
            shapes=[k[5] for k in kept],
        )
    return int(deleted.size)
