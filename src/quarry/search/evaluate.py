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

from quarry.errors import InvalidInput

Qrels = dict[str, dict[str, int]]  # query id -> document id -> graded relevance


@dataclass(frozen=True)
class BeirDataset:
    path: Path
    queries: dict[str, str]
    qrels: Qrels

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
                query_id, doc_id, score = row[0], row[1], int(row[2])
                qrels.setdefault(query_id, {})[doc_id] = score
        queries = {}
        with (path / "queries.jsonl").open() as fh:
            for line in fh:
                item = json.loads(line)
                if item["_id"] in qrels:
                    queries[item["_id"]] = item["text"]
        missing = set(qrels) - set(queries)
        if missing:
            raise InvalidInput(f"{len(missing)} queries in the qrels have no text")
        return cls(path, queries, qrels)

    def corpus(self) -> Iterator[dict[str, str]]:
        with (self.path / "corpus.jsonl").open() as fh:
            for line in fh:
                yield json.loads(line)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked[:k])
    )
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
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
