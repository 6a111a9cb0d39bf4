from pathlib import Path

import numpy as np
import pytest

from engine.builder.exact import Neighbours, agreement, exact_search
from engine.builder.index import annoy_search, build_annoy, load_annoy
from engine.builder.metric import binarize, metric_vectors

METRICS = ["l1", "l2", "hamming", "cosine"]


def _features(n=120, d=24, seed=0):
    rng = np.random.default_rng(seed)
    # Non-negative, sparse-ish like post-ReLU activations, float16 as stored.
    return np.maximum(rng.standard_normal((n, d)) - 0.3, 0).astype(np.float16)


def _reference(q, c, metric):
    """Distances by the textbook definition, in float64."""
    q, c = q.astype(np.float64), c.astype(np.float64)
    if metric == "l1":
        return np.abs(q[:, None] - c[None]).sum(-1)
    if metric == "hamming":
        return (q[:, None] != c[None]).sum(-1)
    if metric == "cosine":  # Annoy's angular distance sqrt(2 - 2 cos)
        cos = (q @ c.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(c, axis=1))
        return np.sqrt(np.clip(2 - 2 * cos, 0, None))
    return np.sqrt(((q[:, None] - c[None]) ** 2).sum(-1))


def _split(n=120):
    return np.arange(20, n), np.arange(20)  # catalog rows, query rows


@pytest.mark.parametrize("metric", METRICS)
def test_exact_search_matches_the_metric_definition(metric):
    feats = _features()
    cat, qry = _split()
    vectors, _ = metric_vectors(feats, metric, cat)
    nb = exact_search(vectors[qry], vectors[cat], metric, 5, item_rows=cat,
                      exclude=[set() for _ in qry], device="cpu", block=7)
    raw = feats.astype(np.float32) if metric != "hamming" else vectors
    ref = _reference(raw[qry], raw[cat], metric)
    np.testing.assert_allclose(nb.dist, np.sort(ref, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert np.all(np.isin(nb.idx, cat))
    top = cat[np.argmin(ref, axis=1)]
    best = ref.min(axis=1)
    np.testing.assert_allclose(ref[np.arange(len(qry)), np.searchsorted(cat, nb.idx[:, 0])],
                               best, rtol=1e-4)
    assert np.mean(nb.idx[:, 0] == top) > 0.9


@pytest.mark.parametrize("metric", METRICS)
def test_annoy_with_a_wide_search_finds_the_exact_neighbour(metric):
    feats = _features()
    cat, qry = _split()
    vectors, _ = metric_vectors(feats, metric, cat)
    index = build_annoy(vectors[cat], metric, n_trees=20, seed=1)
    exclude = [set() for _ in qry]
    found = annoy_search(index, vectors[qry], 5, search_k=100_000, item_rows=cat,
                         exclude=exclude)
    exact = exact_search(vectors[qry], vectors[cat], metric, 5, item_rows=cat, exclude=exclude,
                         device="cpu")
    assert agreement(found, exact)["top1_agreement"] == 1.0
    np.testing.assert_allclose(found.dist[:, 0], exact.dist[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_seeded_annoy_builds_give_identical_neighbours(metric):
    # As spotify/annoy test/seed_test.py: same seed, same data -> same trees.
    vectors, _ = metric_vectors(_features(300, 32, seed=5), metric, np.arange(300))
    a = build_annoy(vectors, metric, n_trees=5, seed=42)
    b = build_annoy(vectors, metric, n_trees=5, seed=42)
    for i in range(0, 300, 7):
        assert a.get_nns_by_item(i, 10, search_k=50) == b.get_nns_by_item(i, 10, search_k=50)


def test_saved_index_loads_by_memory_map(tmp_path):
    vectors, _ = metric_vectors(_features(), "l2", np.arange(120))
    index = build_annoy(vectors, "l2", n_trees=4, seed=0)
    index.save(str(tmp_path / "v.ann"))
    loaded = load_annoy(tmp_path / "v.ann", vectors.shape[1], "l2")
    assert loaded.get_n_items() == 120
    assert loaded.get_nns_by_item(3, 5) == index.get_nns_by_item(3, 5)


def test_binarize_thresholds_at_the_catalog_median():
    feats = np.array([[0, 1, 5], [0, 2, 5], [0, 3, 5], [9, 4, 5]], dtype=np.float32)
    bits, balance = binarize(feats, np.arange(3))  # last row is a query
    # Medians over the catalog rows: 0, 2, 5. Bit = feature > median.
    assert bits.tolist() == [[False, False, False], [False, False, False],
                             [False, True, False], [True, True, False]]
    assert balance["bits"] == 3
    assert balance["dead_bit_share"] == pytest.approx(2 / 3, abs=1e-4)  # dims 0, 2 constant
    assert balance["mean_fraction_ones"] == pytest.approx(1 / 9, abs=1e-4)


def test_binarize_balances_relu_features():
    rng = np.random.default_rng(0)
    feats = np.maximum(rng.standard_normal((1000, 64)), 0)
    bits, balance = binarize(feats, np.arange(1000))
    # Half the values are exactly zero, so `> median` sets close to half of the bits.
    assert 0.4 < balance["mean_fraction_ones"] <= 0.5
    assert balance["dead_bit_share"] == 0


def test_cosine_vectors_are_unit_length():
    vectors, _ = metric_vectors(_features() + 0.01, "cosine", np.arange(120))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'l9'; accepted: l1, l2"):
        metric_vectors(_features(), "l9", np.arange(10))


def test_agreement_counts_equal_distance_ties():
    exact = Neighbours(np.array([[1, 2], [3, 4]]), np.array([[1.0, 2.0], [1.0, 1.5]]))
    tie = Neighbours(np.array([[9, 1], [3, 4]]), np.array([[1.0, 1.0], [1.0, 1.5]]))
    worse = Neighbours(np.array([[2, 1], [3, 4]]), np.array([[2.0, 1.0], [1.0, 1.5]]))
    assert agreement(tie, exact)["top1_agreement"] == 1.0
    assert agreement(tie, exact)["top1_same_item"] == 0.5
    assert agreement(worse, exact)["top1_agreement"] == 0.5


def test_hamming_medians_come_from_a_fixed_sample_of_a_large_catalog(monkeypatch):
    from engine.builder import metric as index

    rng = np.random.default_rng(5)
    feats = rng.gamma(2.0, size=(3000, 12)).astype(np.float16)
    catalog = np.arange(2900)
    exact_bits, exact = binarize(feats, catalog)
    assert exact["median_rows"] == 2900  # at most MEDIAN_SAMPLE rows: the exact median
    monkeypatch.setattr(index, "MEDIAN_SAMPLE", 1000)
    bits, balance = binarize(feats, catalog)
    again, _ = binarize(feats, catalog)
    np.testing.assert_array_equal(bits, again)  # the same sample for every caller
    assert balance["median_rows"] == 1000
    rows = index.median_rows(catalog)
    assert len(set(rows)) == 1000 and set(rows) <= set(catalog)
    np.testing.assert_array_equal(bits, feats.astype(np.float32) > np.median(
        feats[rows].astype(np.float32), axis=0))
    assert 0 < (bits != exact_bits).mean() < 0.05  # close to the exact median's bits
    assert abs(balance["mean_fraction_ones"] - 0.5) < 0.03


# --- faiss, past ANNOY_MAX_ITEMS ----------------------------------------------------------

def test_index_kind_switches_at_the_documented_size():
    from engine.builder.index import ANNOY_MAX_ITEMS, index_kind

    assert index_kind("auto", ANNOY_MAX_ITEMS) == "annoy"
    assert index_kind("auto", ANNOY_MAX_ITEMS + 1) == "faiss"
    assert index_kind("annoy", 10**7) == "annoy" and index_kind("faiss", 10) == "faiss"
    with pytest.raises(ValueError, match="accepted: auto, annoy, faiss"):
        index_kind("hnsw", 10)


@pytest.mark.parametrize("metric", METRICS)
def test_a_faiss_index_built_by_parts_agrees_with_exact_search_after_a_move(metric, tmp_path):
    from engine.builder.index import build_index, open_index
    from engine.builder.metric import MetricSpace, catalog_parts

    rng = np.random.default_rng(11)
    centres = rng.gamma(1.0, size=(12, 32))
    feats = np.maximum(centres[rng.integers(0, 12, 2600)] + rng.normal(0, 0.3, (2600, 32)),
                       0).astype(np.float16)
    cat, qry = np.arange(2400), np.arange(2400, 2600)
    space = MetricSpace.fit(feats, metric, cat)
    (tmp_path / "b" / "indexes").mkdir(parents=True)
    info = build_index(tmp_path / "b" / "indexes" / "v", "faiss", metric,
                       lambda: ((pos, space.vectors(rows)) for pos, rows in
                                catalog_parts(feats, cat)),
                       dims=32, n_items=len(cat), trees=5, seed=0,
                       sample=lambda: space.vectors(feats[cat]))
    (tmp_path / "b").rename(tmp_path / "moved")  # builds are renamed into place
    index = open_index(tmp_path / "moved", info, metric, search_k=0)
    exclude = [set()] * len(qry)
    queries = space.vectors(feats[qry])
    exact = exact_search(queries, space.vectors(feats[cat]), metric, 5, item_rows=cat,
                         exclude=exclude, device="cpu")
    while True:
        found = index.search(queries, 5, item_rows=cat, exclude=exclude)
        agree = agreement(found, exact)
        if agree["top1_agreement"] >= 0.99 or not index.escalate():
            break
    assert agree["top1_agreement"] >= 0.99
    same = found.idx[:, 0] == exact.idx[:, 0]
    np.testing.assert_allclose(found.dist[same, 0], exact.dist[same, 0], rtol=1e-3, atol=1e-3)
    expected = "faiss-binary-flat" if metric == "hamming" else "ivf-flat"
    assert info["kind"] == expected and (tmp_path / "moved" / info["file"]).exists()
    if metric == "hamming":  # exact by construction
        np.testing.assert_array_equal(found.dist, exact.dist)


def test_searches_skip_excluded_rows():
    from engine.builder.ivf import allowed

    dist = np.array([[0.0, 1.0, 2.0, 3.0], [0.5, 0.6, 0.75, np.inf]])
    pos = np.array([[0, 1, 2, 3], [1, 2, 3, -1]])
    rows = np.arange(10, 14)
    found = allowed(dist, pos, 2, rows, [{10}, {11, 12}])
    np.testing.assert_array_equal(found.idx, [[11, 12], [13, -1]])
    np.testing.assert_array_equal(found.dist, [[1.0, 2.0], [0.75, np.inf]])


def _clustered(n, dims, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(20, dims))
    return (centres[rng.integers(0, 20, n)] + rng.normal(0, 1, (n, dims))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
def test_ivf_lists_on_disk_find_what_faiss_ivf_flat_finds(metric, tmp_path):
    """Same quantizer, same nprobe: the same neighbours as faiss' own IndexIVFFlat."""
    import faiss

    from engine.builder.ivf import IvfSearch, build_ivf, faiss_metric, train_quantizer

    vectors = _clustered(3000, 16, 5)
    if metric == "cosine":
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    parts = [(np.arange(a, min(a + 700, 3000)), vectors[a:a + 700]) for a in range(0, 3000, 700)]
    build_ivf(lambda: iter(parts[::-1]), vectors[::3], metric, 3000, tmp_path / "v.ivf")
    search = IvfSearch(tmp_path / "v.ivf", metric)
    quantizer = train_quantizer(vectors[::3], metric, search.n_lists)
    reference = faiss.IndexIVFFlat(quantizer, 16, search.n_lists, faiss_metric(metric))
    reference.add(vectors)
    reference.nprobe = search.nprobe = 3
    queries = _clustered(200, 16, 6)
    if metric == "cosine":
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    want_d, want_p = reference.search(queries, 7)
    got_d, got_p = search.nearest(queries, 7)
    np.testing.assert_array_equal(got_p, want_p)
    want_d = {"l2": np.sqrt(want_d), "cosine": np.sqrt(np.maximum(2 - 2 * want_d, 0)),
              "l1": want_d}[metric]
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)


def test_ivf_search_maps_no_file_and_a_gap_in_the_parts_is_an_error(tmp_path):
    from engine.builder.ivf import IvfSearch, build_ivf

    vectors = _clustered(1000, 8, 7)
    parts = [(np.arange(1000), vectors)]
    build_ivf(lambda: iter(parts), vectors, "l2", 1000, tmp_path / "v.ivf")
    search = IvfSearch(tmp_path / "v.ivf", "l2")
    search.nprobe = search.n_lists  # every list: exact
    _, pos = search.nearest(vectors[:50], 1)
    np.testing.assert_array_equal(pos[:, 0], np.arange(50))
    assert "v.ivf" not in Path("/proc/self/maps").read_text()  # read, never mapped
    with pytest.raises(ValueError, match="do not cover all 1001 catalog items"):
        build_ivf(lambda: iter(parts), vectors, "l2", 1001, tmp_path / "w.ivf")
    assert not (tmp_path / "w.ivf").exists()
