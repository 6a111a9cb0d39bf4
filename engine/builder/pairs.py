"""Pick each query's match under every variant (its index, checked against exact search).

Every variant answers the same queries. A match is never the query itself nor a
catalog image whose pixels are byte-identical to it (Fashion-MNIST has exact
duplicates across its train and test splits).

Exact search checks the index on a fixed, seeded random sample of at most EXACT_SAMPLE
queries (every query, in order, when there are no more), so the check costs sample x
catalog, not queries x catalog; the report gives the agreement with its interval.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.builder.exact import Neighbours, agreement, exact_search
from engine.builder.index import setting
from engine.builder.metric import MetricSpace
from engine.stats import seeded_sample

logger = logging.getLogger(__name__)

AGREEMENT_TARGET = 0.99
MAX_ESCALATIONS = 4
EXACT_SAMPLE = 1000


@dataclass
class VariantResult:
    """What one variant's index returned for the queries, and how it compared with exact."""

    slug: str
    found: Neighbours
    exact: Neighbours | None = None  # for the queries at positions exact_rows only
    report: dict = field(default_factory=dict)
    exact_rows: np.ndarray | None = None  # positions in the query list; None: every query


def exact_sample(n_queries: int, seed: int, size: int | None = None) -> np.ndarray:
    """Return the positions of the queries exact search checks: all of them when there
    are at most `size` (default EXACT_SAMPLE), else a seeded random `size` of them, in
    order."""
    size = EXACT_SAMPLE if size is None else size
    return seeded_sample(n_queries, size, seed)


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


def exact_check(features, space: MetricSpace, catalog_rows: np.ndarray, queries: np.ndarray,
                exclude: list[set[int]], k: int, device: str) -> Callable:
    """Return search_variant's `exact`: exact search of a sample of the queries (metric
    vectors) over the catalog's shards, one shard at a time."""
    def exact(sample: np.ndarray) -> Neighbours:
        return exact_search(queries[sample], space.parts(features, catalog_rows), space.metric,
                            k, item_rows=catalog_rows,
                            exclude=[exclude[i] for i in sample], device=device)
    return exact


def search_variant(slug: str, index, queries: np.ndarray, *,
                   exact: Callable[[np.ndarray], Neighbours], item_rows: np.ndarray,
                   exclude: list[set[int]], k: int, seed: int = 0) -> VariantResult:
    """Query the variant's index (index.AnnoySearch or FaissSearch) with every query's
    metric vector; `exact(sample)` gives exact search on the sample of queries
    (exact_sample, `seed`). Raise search_k / nprobe until top-1 agreement on the sample
    meets the target."""
    sample = exact_sample(len(queries), seed)
    t0 = time.perf_counter()
    truth = exact(sample)
    exact_s = time.perf_counter() - t0
    for attempt in range(MAX_ESCALATIONS + 1):
        t0 = time.perf_counter()
        found = index.search(queries, k, item_rows=item_rows, exclude=exclude)
        index_s = time.perf_counter() - t0
        agree = agreement(Neighbours(found.idx[sample], found.dist[sample]), truth)
        if agree["top1_agreement"] >= AGREEMENT_TARGET or attempt == MAX_ESCALATIONS:
            break
        logger.info("%s: top-1 agreement %.3f < %.2f at %s", slug, agree["top1_agreement"],
                    AGREEMENT_TARGET, setting(index))
        if not index.escalate():
            break
    if agree["top1_agreement"] < AGREEMENT_TARGET:
        logger.warning("%s: top-1 agreement %.3f stays below %.2f", slug,
                       agree["top1_agreement"], AGREEMENT_TARGET)
    report = {**agree, **setting(index), "index_query_s": round(index_s, 3),
              "exact_query_s": round(exact_s, 3),
              "index_ms_per_query": round(1000 * index_s / max(len(queries), 1), 3),
              "exact_ms_per_query": round(1000 * exact_s / max(len(sample), 1), 3)}
    return VariantResult(slug, found, truth, report, sample)


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
        for r in range(min(ranks, result.found.idx.shape[1])):
            row = int(result.found.idx[qi, r])
            if row < 0:
                continue
            d = float(result.found.dist[qi, r])
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
    """Save a variant's index and exact neighbours (for `evaluate` run on its own)."""
    arrays = {"annoy_idx": result.found.idx, "annoy_dist": result.found.dist}
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
