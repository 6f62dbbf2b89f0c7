"""What the `english` analyzer's spelling step costs (migration 0016).

Every chunk written, every re-analysis and every query goes through ``search_terms``, which for
`english` runs ``english_spelling`` (Greek letters spelled out, British spellings made
American) before ``to_tsvector``. The reference is ``to_tsvector`` alone, the analysis before
0016, over the same texts in the same run: SciFact's 5,183 abstracts with their titles, sent
once per round as one array and analysed inside Postgres. Rounds alternate between the forms;
each figure is the median round, less the round trip that only counts the texts.

    .venv/bin/python bench/analysis.py [--rounds 7] [--json bench/results/analysis.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from quarry.db import migrate
from quarry.db.embedded import EmbeddedPostgres

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"

FORMS = {
    "bare": "SELECT sum(length(x)) FROM unnest(%s::text[]) AS x",
    "to_tsvector": "SELECT sum(length(to_tsvector('english', x))) FROM unnest(%s::text[]) AS x",
    "english_spelling": "SELECT sum(length(english_spelling(x))) FROM unnest(%s::text[]) AS x",
    "search_terms": ("SELECT sum(length(search_terms('english', x))) FROM unnest(%s::text[]) AS x"),
}


def load_texts() -> list[str]:
    with (SCIFACT / "corpus.jsonl").open() as fh:
        docs = [json.loads(line) for line in fh]
    return [f"{d['title']}\n\n{d['text']}" for d in docs]


async def migrated(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await migrate.upgrade(conn)


def run(rounds: int) -> dict:
    texts = load_texts()
    with tempfile.TemporaryDirectory(prefix="quarry-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp))
        url = server.start()
        try:
            asyncio.run(migrated(url))
            with psycopg.connect(url) as conn:
                timings: dict[str, list[float]] = {form: [] for form in FORMS}
                for _ in range(rounds):
                    for form, statement in FORMS.items():
                        started = time.perf_counter()
                        conn.execute(statement, (texts,)).fetchone()
                        timings[form].append(time.perf_counter() - started)
                respelled = conn.execute(
                    "SELECT count(*) FILTER (WHERE english_spelling(x) <> lower(x)),"
                    " count(*) FILTER (WHERE search_terms('english', x)"
                    "                        <> to_tsvector('english', x))"
                    " FROM unnest(%s::text[]) AS x",
                    (texts,),
                ).fetchone()
                assert respelled is not None
        finally:
            server.stop()
    bare = statistics.median(timings["bare"])
    per_text = {
        form: round((statistics.median(times) - bare) / len(texts) * 1e6, 1)
        for form, times in timings.items()
        if form != "bare"
    }
    characters = sum(len(t) for t in texts)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "texts": len(texts),
        "mean_characters": round(characters / len(texts)),
        "rounds": rounds,
        "us_per_text": per_text,
        "search_terms_over_to_tsvector": round(
            per_text["search_terms"] / per_text["to_tsvector"], 2
        ),
        "texts_respelled": respelled[0],
        "texts_whose_terms_change": respelled[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.rounds)
    print(f"{result['texts']} texts of {result['mean_characters']} characters on average")
    for form, us in result["us_per_text"].items():
        print(f"{form:>17}: {us:7.1f} us per text")
    print(
        f"search_terms / to_tsvector (the analysis before the spelling step): "
        f"{result['search_terms_over_to_tsvector']:.2f}"
    )
    print(
        f"texts with a spelling made one: {result['texts_respelled']}, "
        f"whose terms change: {result['texts_whose_terms_change']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
