import numpy as np
import pytest

from engine.builder.evaluate import (
    average_precision_at,
    evaluate_variants,
    item_recall,
    markdown_report,
    ranking_metrics,
    tsne_plot,
)
from engine.builder.exact import Neighbours


def test_ranking_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 0, 1])  # rows 0-3 catalog, 4-5 queries
    nb = Neighbours(np.array([[0, 2, 1], [0, 1, 3]]), np.zeros((2, 3), np.float32))
    out = ranking_metrics(nb, np.array([4, 5]), labels, ["a", "b"], relevant=np.array([2, 2]))
    assert out["top1_accuracy"] == 0.5  # query 4 (a) -> 0 (a) hit; query 5 (b) -> 0 miss
    assert out["per_category_top1"] == {"a": 1.0, "b": 0.0}
    assert out["precision_at_5"] == pytest.approx(round(3 / 6, 4))


def test_map_at_k():
    hits = np.array([[True, False, True], [False, True, False]])
    # Query 1: (1/1 + 2/3) / min(3, 2); query 2: (1/2) / min(3, 1).
    assert average_precision_at(hits, 3, np.array([2, 1])) == pytest.approx(
        ((1 + 2 / 3) / 2 + 0.5) / 2)


def test_item_recall():
    item_ids = ["p1", "p2", "p3", "p1", "p9"]  # rows 3 and 4 are queries
    idx = np.array([[1, 0, 2], [0, 1, 2]])
    out = item_recall(idx, np.array([3, 4]), item_ids)
    assert out == {"item_recall_at_1": 0.0, "item_recall_at_20": 0.5}


def test_markdown_has_the_article_table():
    entry = {"name": "n", "control": False, "top1_accuracy": 0.9, "precision_at_5": 0.8,
             "precision_at_20": 0.7, "map_at_20": 0.6, "per_category_top1": {"a": 0.9}}
    report = {"variant_set": "offline", "counts": {"queries": 2, "catalog": 4}, "variants": {
        "net.fc6.l1": entry | {"network": "net", "layer": "fc6", "metric": "l1"},
        "net.fc6.hamming": entry | {"network": "net", "layer": "fc6", "metric": "hamming",
                                    "top1_accuracy": 0.7},
        "random": entry | {"network": None, "layer": None, "metric": None, "control": True,
                           "top1_accuracy": 0.1}}, "timings": {"pairs": 1.25}}
    md = markdown_report(report)
    assert "| network | layer | l1 | hamming |" in md
    assert "| net | fc6 | 0.900 | 0.700 |" in md
    assert "| random (control) | | 0.100 |" in md
    assert "| pairs | 1.2 |" in md or "| pairs | 1.3 |" in md


def test_tsne_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    feats = rng.standard_normal((60, 30)) + labels[:, None] * 3
    tsne_plot(feats, labels, ["a", "b", "c"], tmp_path / "t.png", title="t", points=50)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_top1_is_scored_on_the_sampled_queries_only():
    from engine.builder.pairs import VariantResult
    from engine.builder.variants import Variant

    labels = np.array([0, 0, 1, 1, 0, 1, 1])  # rows 0-3 catalog, 4-6 queries
    annoy = Neighbours(np.array([[0], [2], [0]]), np.zeros((3, 1), np.float32))
    # Exact search checked queries 0 and 2 (rows 4 and 6): row 4 -> 1 (a, hit), row 6 -> 0 (miss)
    exact = Neighbours(np.array([[1], [0]]), np.zeros((2, 1), np.float32))
    report = {"top1_agreement": 0.5, "top1_agreement_95": [0.09, 0.91], "exact_queries": 2}
    v = Variant("net", "fc6", "l2")
    out = evaluate_variants({v.slug: VariantResult(v.slug, annoy, exact, report, np.array([0, 2]))},
                            [v], labels=labels, categories=["a", "b"],
                            query_rows=np.array([4, 5, 6]), catalog_rows=np.arange(4))
    entry = out[v.slug]
    assert entry["top1_accuracy"] == pytest.approx(round(2 / 3, 4))  # every query, Annoy
    assert entry["exact_top1_accuracy"] == 0.5
    assert entry["index_vs_exact"]["exact_queries"] == 2
    md = markdown_report({"variant_set": "s", "counts": {"queries": 3, "catalog": 4},
                          "variants": {v.slug: entry | {"name": "n", "network": "net",
                                                         "layer": "fc6", "metric": "l2"}}})
    assert "0.500 (0.090-0.910, 2 q)" in md
