"""Offline evaluation of every variant: accuracy tables, eval.json, eval.md, t-SNE maps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engine.builder.exact import Neighbours

logger = logging.getLogger(__name__)

METRIC_ORDER = ("l1", "l2", "hamming", "cosine")
TSNE_POINTS = 2000


def precision_at(hits: np.ndarray, k: int) -> float:
    """Return mean precision@k of a (queries, >=k) boolean hit matrix."""
    return float(hits[:, :k].mean()) if len(hits) else 0.0


def average_precision_at(hits: np.ndarray, k: int, relevant: np.ndarray) -> float:
    """Return mAP@k: per query, sum of precision@i at each hit i <= k over min(k, relevant)."""
    h = hits[:, :k].astype(np.float64)
    prec = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    denom = np.minimum(k, np.maximum(relevant, 1))
    return float(np.mean((prec * h).sum(axis=1) / denom)) if len(h) else 0.0


def ranking_metrics(nb: Neighbours, query_rows: np.ndarray, labels: np.ndarray,
                    categories: list[str], relevant: np.ndarray,
                    item_ids: list[str] | None = None) -> dict:
    """Return same-category top-1 accuracy, precision@5/@20, mAP@20, per-category accuracy."""
    idx = nb.idx
    valid = idx >= 0
    match_labels = np.where(valid, labels[np.where(valid, idx, 0)], -1)
    hits = match_labels == labels[query_rows][:, None]
    top1 = hits[:, 0]
    out = {"top1_accuracy": round(float(top1.mean()), 4),
           "precision_at_5": round(precision_at(hits, 5), 4),
           "precision_at_20": round(precision_at(hits, 20), 4),
           "map_at_20": round(average_precision_at(hits, 20, relevant), 4)}
    q_labels = labels[query_rows]
    out["per_category_top1"] = {
        c: round(float(top1[q_labels == i].mean()), 4)
        for i, c in enumerate(categories) if np.any(q_labels == i)}
    if item_ids is not None:
        out |= item_recall(idx, query_rows, item_ids)
    return out


def item_recall(idx: np.ndarray, query_rows: np.ndarray, item_ids: list[str]) -> dict:
    """Return item recall@1/@20: share of queries whose product is among the top matches."""
    ids = np.array(item_ids, dtype=object)
    has = np.array([bool(item_ids[q]) for q in query_rows])
    found = {}
    for k in (1, 20):
        top = idx[:, :k]
        match = np.array([item_ids[q] in set(ids[top[i][top[i] >= 0]])
                          for i, q in enumerate(query_rows)])
        found[f"item_recall_at_{k}"] = round(float(match[has].mean()), 4) if has.any() else None
    return found


def relevant_counts(labels: np.ndarray, query_rows: np.ndarray,
                    catalog_rows: np.ndarray) -> np.ndarray:
    """Return, per query, how many catalog rows share its category."""
    counts = np.bincount(labels[catalog_rows], minlength=labels.max() + 1)
    return counts[labels[query_rows]]


def evaluate_variants(results: dict, variants: list, *, labels: np.ndarray,
                      categories: list[str], query_rows: np.ndarray, catalog_rows: np.ndarray,
                      item_ids: list[str] | None = None, index_info: dict | None = None) -> dict:
    """Return eval.json's `variants` section: one metrics dict per variant slug."""
    relevant = relevant_counts(labels, query_rows, catalog_rows)
    out = {}
    for v in variants:
        res = results[v.slug]
        entry = {"name": v.name, "network": v.network, "layer": v.layer, "metric": v.metric,
                 "control": v.control}
        entry |= ranking_metrics(res.found, query_rows, labels, categories, relevant, item_ids)
        if res.exact is not None:
            rows = np.arange(len(query_rows)) if res.exact_rows is None else res.exact_rows
            exact = ranking_metrics(res.exact, query_rows[rows], labels, categories,
                                    relevant[rows])
            entry["exact_top1_accuracy"] = exact["top1_accuracy"]
            entry["index_vs_exact"] = {k: res.report[k] for k in
                                       ("index", "top1_agreement", "top1_agreement_95",
                                        "top1_same_item", "recall_at_10", "exact_queries",
                                        "search_k", "nprobe") if k in res.report}
            entry["query_ms"] = {"index": res.report.get("index_ms_per_query"),
                                 "exact": res.report.get("exact_ms_per_query")}
            if res.report.get("index", "annoy") == "annoy":  # the name builds had before faiss
                entry["annoy_vs_exact"] = entry["index_vs_exact"]
        if index_info and v.slug in index_info:
            entry["index"] = index_info[v.slug]
        out[v.slug] = entry
    return out


def _agreement(ave: dict) -> str:
    """Top-1 agreement with exact search, its 95% interval and the queries checked."""
    if "top1_agreement_95" not in ave:
        return _fmt(ave.get("top1_agreement"))
    low, high = ave["top1_agreement_95"]
    return f"{ave['top1_agreement']:.3f} ({low:.3f}-{high:.3f}, {ave['exact_queries']} q)"


def markdown_report(report: dict) -> str:
    """Return eval.md: the article-style table, then details and per-category accuracy."""
    variants = report["variants"]
    lines = [f"# Offline evaluation ({report.get('variant_set', '')})", "",
             f"{report['counts']['queries']} queries against {report['counts']['catalog']} "
             "catalog items. Cells: same-category accuracy of the top match (top-1).", ""]
    lines += _article_table(variants) + [""]
    lines += ["## Details", "",
              "| variant | top-1 | exact top-1 | P@5 | P@20 | mAP@20 | index agreement (95%) "
              "| index recall@10 | bits: ones / dead |",
              "|---|---|---|---|---|---|---|---|---|"]
    for slug, e in variants.items():
        ave = e.get("index_vs_exact", {})
        bal = e.get("index", {}).get("bit_balance")
        bits = f"{bal['mean_fraction_ones']:.3f} / {bal['dead_bit_share']:.3f}" if bal else ""
        lines.append(f"| `{slug}` | {e['top1_accuracy']:.3f} | "
                     f"{_fmt(e.get('exact_top1_accuracy'))} | {e['precision_at_5']:.3f} | "
                     f"{e['precision_at_20']:.3f} | {e['map_at_20']:.3f} | "
                     f"{_agreement(ave)} | {_fmt(ave.get('recall_at_10'))} | {bits} |")
    if any(e.get("item_recall_at_1") is not None for e in variants.values()):
        lines += ["", "| variant | item recall@1 | item recall@20 |", "|---|---|---|"]
        lines += [f"| `{s}` | {_fmt(e.get('item_recall_at_1'))} | "
                  f"{_fmt(e.get('item_recall_at_20'))} |" for s, e in variants.items()]
    lines += [""] + _category_table(variants) + [""] + _timing_table(report.get("timings", {}))
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    return "" if x is None else f"{x:.3f}"


def _article_table(variants: dict) -> list[str]:
    rows: dict[tuple, dict] = {}
    metrics = [m for m in METRIC_ORDER if any(e["metric"] == m for e in variants.values())]
    for e in variants.values():
        if not e["control"]:
            rows.setdefault((e["network"], e["layer"]), {})[e["metric"]] = e["top1_accuracy"]
    lines = ["| network | layer | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for (network, layer), cells in rows.items():
        lines.append(f"| {network} | {layer} | " +
                     " | ".join(_fmt(cells.get(m)) for m in metrics) + " |")
    for e in variants.values():
        if e["control"]:
            lines.append(f"| random (control) | | {_fmt(e['top1_accuracy'])} |" +
                         " |" * (len(metrics) - 1))
    return lines


def _category_table(variants: dict) -> list[str]:
    slugs = list(variants)
    cats = list(next(iter(variants.values()))["per_category_top1"]) if variants else []
    lines = ["## Top-1 accuracy per category", "",
             "| category | " + " | ".join(f"`{s}`" for s in slugs) + " |",
             "|---|" + "---|" * len(slugs)]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(
            _fmt(variants[s]["per_category_top1"].get(c)) for s in slugs) + " |")
    return lines


def _timing_table(timings: dict) -> list[str]:
    lines = ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {sec:.1f} |" for stage, sec in timings.items()]
    return lines


def write_reports(out: Path, report: dict) -> None:
    """Write eval.json and eval.md into a build directory."""
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "eval.md").write_text(markdown_report(report))


def tsne_plot(features: np.ndarray, labels: np.ndarray, categories: list[str], path: Path,
              *, title: str, seed: int = 0, points: int = TSNE_POINTS) -> None:
    """Draw a t-SNE map (after PCA to 50 dimensions) of catalog rows coloured by category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(features))[:points])
    x = np.asarray(features[pick], dtype=np.float32)
    n_comp = min(50, x.shape[1], len(x))
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    # One thread: OpenMP spin-waiting on a busy shared 2-core machine is 10-50x slower.
    with threadpool_limits(limits=1):
        x = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
        xy = TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=500,
                  random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    cmap = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
    for i, c in enumerate(categories):
        m = labels[pick] == i
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % cmap.N), label=c)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
