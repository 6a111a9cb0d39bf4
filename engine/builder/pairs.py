"""Pick each query's match under every variant (Annoy, checked against exact search).

Every variant answers the same queries. A match is never the query itself nor a
catalog image whose pixels are byte-identical to it (Fashion-MNIST has exact
duplicates across its train and test splits).

Exact search checks Annoy on a fixed, seeded random sample of at most EXACT_SAMPLE
queries (every query, in order, when there are no more), so the check costs sample x
catalog, not queries x catalog; the report gives the agreement with its interval.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.builder.index import Neighbours, agreement, annoy_search, exact_search

logger = logging.getLogger(__name__)

AGREEMENT_TARGET = 0.99
MAX_ESCALATIONS = 4
EXACT_SAMPLE = 1000


@dataclass
class VariantResult:
    """What one variant returned for the queries, and how Annoy compared with exact."""

    slug: str
    annoy: Neighbours
    exact: Neighbours | None = None  # for the queries at positions exact_rows only
    report: dict = field(default_factory=dict)
    exact_rows: np.ndarray | None = None  # positions in the query list; None: every query


def exact_sample(n_queries: int, seed: int, size: int | None = None) -> np.ndarray:
    """Return the positions of the queries exact search checks: all of them when there
    are at most `size` (default EXACT_SAMPLE), else a seeded random `size` of them, in
    order."""
    size = EXACT_SAMPLE if size is None else size
    if n_queries <= size:
        return np.arange(n_queries)
    return np.sort(np.random.default_rng(seed).choice(n_queries, size, replace=False))


def duplicate_exclusions(pixel_hash: list[str], query_rows: np.ndarray,
                         catalog_rows: np.ndarray) -> list[set[int]]:
    """Return, per query, the catalog rows that are the query or a byte-identical copy."""
    by_hash: dict[str, set[int]] = {}
    for row in catalog_rows:
        by_hash.setdefault(pixel_hash[row], set()).add(int(row))
    # The query's own row (when a source lists it in the catalog too) shares its hash.
    return [set(by_hash.get(pixel_hash[q], ())) for q in query_rows]


def default_search_k(n_catalog: int, k: int, n_trees: int) -> int:
    """Return a search_k that keeps Annoy within the agreement target on typical features."""
    return max(k * n_trees * 10, n_catalog)


def search_variant(slug: str, vectors: np.ndarray, metric: str, index, *,
                   catalog_rows: np.ndarray, query_rows: np.ndarray, exclude: list[set[int]],
                   k: int, search_k: int, device: str = "auto", seed: int = 0) -> VariantResult:
    """Query Annoy, and exact search on the sample of queries (exact_sample, `seed`);
    raise search_k until top-1 agreement on the sample meets the target."""
    queries = vectors[query_rows]
    sample = exact_sample(len(query_rows), seed)
    t0 = time.perf_counter()
    exact = exact_search(queries[sample], vectors[catalog_rows], metric, k,
                         item_rows=catalog_rows, exclude=[exclude[i] for i in sample],
                         device=device)
    exact_s = time.perf_counter() - t0
    for attempt in range(MAX_ESCALATIONS + 1):
        t0 = time.perf_counter()
        found = annoy_search(index, queries, k, search_k=search_k, item_rows=catalog_rows,
                             exclude=exclude)
        annoy_s = time.perf_counter() - t0
        agree = agreement(Neighbours(found.idx[sample], found.dist[sample]), exact)
        if agree["top1_agreement"] >= AGREEMENT_TARGET or attempt == MAX_ESCALATIONS:
            break
        logger.info("%s: Annoy top-1 agreement %.3f < %.2f at search_k=%d; doubling it",
                    slug, agree["top1_agreement"], AGREEMENT_TARGET, search_k)
        search_k *= 2
    if agree["top1_agreement"] < AGREEMENT_TARGET:
        logger.warning("%s: Annoy top-1 agreement %.3f stays below %.2f", slug,
                       agree["top1_agreement"], AGREEMENT_TARGET)
    report = {**agree, "search_k": search_k, "annoy_query_s": round(annoy_s, 3),
              "exact_query_s": round(exact_s, 3),
              "annoy_ms_per_query": round(1000 * annoy_s / max(len(queries), 1), 3),
              "exact_ms_per_query": round(1000 * exact_s / max(len(sample), 1), 3)}
    return VariantResult(slug, found, exact, report, sample)


def random_control(query_rows: np.ndarray, catalog_rows: np.ndarray,
                   exclude: list[set[int]], *, k: int, seed: int) -> VariantResult:
    """Pick k distinct uniform random catalog rows per query (never a duplicate of it)."""
    rng = np.random.default_rng(seed)
    idx = np.empty((len(query_rows), k), dtype=np.int64)
    for qi in range(len(query_rows)):
        picks: list[int] = []
        for row in catalog_rows[rng.permutation(len(catalog_rows))]:
            if int(row) not in exclude[qi]:
                picks.append(int(row))
                if len(picks) == k:
                    break
        idx[qi, : len(picks)], idx[qi, len(picks):] = picks, -1
    return VariantResult("random", Neighbours(idx, np.full(idx.shape, np.nan, np.float32)))


def pair_records(result: VariantResult, query_rows: np.ndarray, image_id: list[str], *,
                 ranks: int = 1) -> list[dict]:
    """Return pairs.jsonl records for one variant: ranks 1..ranks per query."""
    records = []
    for qi, q in enumerate(query_rows):
        for r in range(min(ranks, result.annoy.idx.shape[1])):
            row = int(result.annoy.idx[qi, r])
            if row < 0:
                continue
            d = float(result.annoy.dist[qi, r])
            records.append({"query_id": image_id[q], "match_id": image_id[row],
                            "variant": result.slug, "rank": r + 1,
                            "distance": None if np.isnan(d) else round(d, 5)})
    return records


def write_pairs(path: Path, records: list[dict]) -> None:
    """Write pairs as JSON Lines."""
    with open(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def save_neighbours(path: Path, result: VariantResult) -> None:
    """Save a variant's Annoy and exact neighbours (for `evaluate` run on its own)."""
    arrays = {"annoy_idx": result.annoy.idx, "annoy_dist": result.annoy.dist}
    if result.exact is not None:
        arrays |= {"exact_idx": result.exact.idx, "exact_dist": result.exact.dist}
        if result.exact_rows is not None:
            arrays["exact_rows"] = result.exact_rows
    np.savez(path, **arrays)
    path.with_suffix(".json").write_text(json.dumps(result.report, indent=2))


def load_neighbours(path: Path, slug: str) -> VariantResult:
    """Load what save_neighbours wrote."""
    data = np.load(path)
    exact = Neighbours(data["exact_idx"], data["exact_dist"]) if "exact_idx" in data else None
    report_path = path.with_suffix(".json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    rows = data["exact_rows"] if "exact_rows" in data else None  # older builds: every query
    return VariantResult(slug, Neighbours(data["annoy_idx"], data["annoy_dist"]), exact, report,
                         rows)
