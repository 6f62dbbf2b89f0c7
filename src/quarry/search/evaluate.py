"""Retrieval metrics as BEIR computes them (pytrec_eval's definitions), and BEIR-layout data.

A dataset folder holds ``corpus.jsonl`` ({_id, title, text}), ``queries.jsonl`` ({_id, text})
and ``qrels/<split>.tsv`` (query-id, corpus-id, score; with a header line).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarry.errors import InvalidInput

Qrels = dict[str, dict[str, int]]  # query id -> document id -> graded relevance


@dataclass(frozen=True)
class BeirDataset:
    path: Path
    queries: dict[str, str]
    qrels: Qrels
    documents: int = 0  # lines of the corpus

    @classmethod
    def load(cls, path: Path, split: str) -> BeirDataset:
        qrels_file = path / "qrels" / f"{split}.tsv"
        for needed in (path / "corpus.jsonl", path / "queries.jsonl", qrels_file):
            if not needed.is_file():
                raise InvalidInput(f"{needed} is missing: not a BEIR dataset folder or split")
        qrels: Qrels = {}
        with qrels_file.open(newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header is None or header[0] != "query-id":
                raise InvalidInput(f"{qrels_file} does not start with a query-id header")
            for row in reader:
                if not row:
                    continue
                try:
                    query_id, doc_id, score = row[0], row[1], int(row[2])
                except (IndexError, ValueError):
                    raise InvalidInput(
                        f"{qrels_file} line {reader.line_num}: not query-id, corpus-id and an "
                        "integer score separated by tabs"
                    ) from None
                qrels.setdefault(query_id, {})[doc_id] = score
        queries = {
            item["_id"]: item["text"]
            for item in _records(path / "queries.jsonl", ("_id", "text"))
            if item["_id"] in qrels
        }
        missing = set(qrels) - set(queries)
        if missing:
            raise InvalidInput(f"{len(missing)} queries in the qrels have no text")
        # Read once here, so a broken line is found before a project is made and loaded.
        documents = sum(1 for _ in _records(path / "corpus.jsonl", ("_id",)))
        return cls(path, queries, qrels, documents)

    def corpus(self) -> Iterator[dict[str, Any]]:
        """The documents, as the file holds them; a line that is not one stops the load with
        an error naming it."""
        return _records(self.path / "corpus.jsonl", ("_id",))


def _records(path: Path, keys: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """A JSON Lines file's objects (blank lines skipped), each holding ``keys`` as text; an
    ``_id`` may be a number, and is given as text."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                item = None
            if isinstance(item, dict) and type(item.get("_id")) is int:
                item["_id"] = str(item["_id"])
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in keys):
                wanted = ", ".join(f'"{k}"' for k in keys)
                raise InvalidInput(f"{path} line {number}: not a JSON object with text {wanted}")
            yield item


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """trec_eval's ndcg_cut (what BEIR reports through pytrec_eval): a document's gain is its
    grade itself, not 2^grade - 1 (the two agree on binary judgements)."""
    dcg = sum(max(relevant.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation, as numpy's default."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(
    runs: Mapping[str, Sequence[str]], qrels: Qrels, latencies_ms: Sequence[float]
) -> dict[str, float]:
    """Mean metrics over the queries of ``qrels`` (a query with no run scores 0)."""
    n = len(qrels)
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for query_id, relevant in qrels.items():
        ranked = runs.get(query_id, [])
        totals["ndcg@10"] += ndcg_at(ranked, relevant, 10)
        totals["recall@10"] += recall_at(ranked, relevant, 10)
        totals["recall@100"] += recall_at(ranked, relevant, 100)
        totals["mrr@10"] += mrr_at(ranked, relevant, 10)
    figures = {name: round(total / n, 4) if n else 0.0 for name, total in totals.items()}
    figures["p50_ms"] = round(percentile(latencies_ms, 50), 2)
    figures["p95_ms"] = round(percentile(latencies_ms, 95), 2)
    return figures


def compare(
    current: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    tolerance: float,
) -> list[str]:
    """Quality metrics that dropped by more than ``tolerance`` against a baseline (latency is
    left out: it measures the machine as much as the code)."""
    drops = []
    for mode, figures in baseline.items():
        for metric, before in figures.items():
            if metric.endswith("_ms"):
                continue
            now = current.get(mode, {}).get(metric)
            if now is None:
                drops.append(f"{mode} {metric}: missing (baseline {before:.4f})")
            elif before - now > tolerance:
                drops.append(f"{mode} {metric}: {now:.4f} < baseline {before:.4f} - {tolerance}")
    return drops
