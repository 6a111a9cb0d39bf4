import json

import numpy as np

from engine.builder import pairs
from engine.builder.exact import exact_search
from engine.builder.index import AnnoySearch, build_annoy
from engine.builder.metric import MetricSpace, metric_vectors
from engine.builder.pairs import (
    duplicate_exclusions,
    exact_check,
    exact_sample,
    load_neighbours,
    pair_records,
    random_control,
    save_neighbours,
    search_variant,
    write_pairs,
)


def _setup(n_catalog=80, n_query=10, d=16, seed=0):
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.standard_normal((n_catalog + n_query, d)), 0).astype(np.float16)
    catalog_rows = np.arange(n_catalog)
    query_rows = np.arange(n_catalog, n_catalog + n_query)
    hashes = [f"h{i}" for i in range(n_catalog + n_query)]
    # Query 0 is a byte-identical copy of catalog rows 5 and 6.
    feats[n_catalog] = feats[5] = feats[6]
    hashes[n_catalog] = hashes[5] = hashes[6] = "dup"
    return feats, catalog_rows, query_rows, hashes


def _search(feats, cat, qry, exclude, *, search_k, seed=0, metric="l2"):
    space = MetricSpace.fit(feats, metric, cat)
    queries = space.vectors(feats[qry])
    index = AnnoySearch(build_annoy(space.vectors(feats[cat]), metric, n_trees=5, seed=0),
                        search_k)
    return search_variant("x.y.l2", index, queries, item_rows=cat, exclude=exclude, k=5,
                          seed=seed, exact=exact_check(feats, space, cat, queries, exclude, 5,
                                                       "cpu"))


def test_duplicate_exclusions_find_byte_identical_catalog_rows():
    _, cat, qry, hashes = _setup()
    exclude = duplicate_exclusions(hashes, qry, cat)
    assert exclude[0] == {5, 6}
    assert all(not e for e in exclude[1:])


def test_a_match_is_never_a_copy_of_the_query():
    feats, cat, qry, hashes = _setup()
    exclude = duplicate_exclusions(hashes, qry, cat)
    res = _search(feats, cat, qry, exclude, search_k=1000)
    assert not {5, 6} & set(res.found.idx[0]) and not {5, 6} & set(res.exact.idx[0])
    assert res.found.dist[0, 0] > 0
    assert res.report["top1_agreement"] >= 0.99
    assert {"recall_at_10", "search_k", "index_ms_per_query", "index"} <= set(res.report)


def test_random_control_is_seeded_uniform_and_skips_copies():
    _, cat, qry, hashes = _setup()
    exclude = duplicate_exclusions(hashes, qry, cat)
    a = random_control(qry, cat, exclude, k=5, seed=1)
    b = random_control(qry, cat, exclude, k=5, seed=1)
    c = random_control(qry, cat, exclude, k=5, seed=2)
    np.testing.assert_array_equal(a.found.idx, b.found.idx)
    assert not np.array_equal(a.found.idx, c.found.idx)
    assert not {5, 6} & set(a.found.idx[0])
    assert all(len(set(row)) == 5 for row in a.found.idx)
    many = random_control(np.arange(80, 4080), cat, [set()] * 4000, k=1, seed=0)
    counts = np.bincount(many.found.idx[:, 0], minlength=80)
    assert counts.min() > 20 and counts.max() < 90  # about 50 each


def test_pair_records_and_round_trip(tmp_path):
    _, cat, qry, hashes = _setup()
    ids = [f"id{i}" for i in range(90)]
    control = random_control(qry, cat, [set()] * len(qry), k=3, seed=0)
    records = pair_records(control, qry, ids, ranks=2)
    assert len(records) == 20
    assert records[0] == {"query_id": "id80", "match_id": ids[control.found.idx[0, 0]],
                          "variant": "random", "rank": 1, "distance": None}
    write_pairs(tmp_path / "pairs.jsonl", records)
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == records
    save_neighbours(tmp_path / "random.npz", control)
    back = load_neighbours(tmp_path / "random.npz", "random")
    np.testing.assert_array_equal(back.found.idx, control.found.idx)
    assert back.exact is None


def test_exact_search_checks_every_query_when_there_are_few():
    np.testing.assert_array_equal(exact_sample(500, seed=3), np.arange(500))
    np.testing.assert_array_equal(exact_sample(5, seed=3, size=5), np.arange(5))


def test_exact_search_checks_a_fixed_random_sample_of_many_queries(monkeypatch, tmp_path):
    """Past EXACT_SAMPLE queries the check runs on a seeded sample (its cost stops growing
    with the queries); every query still gets Annoy's matches."""
    monkeypatch.setattr(pairs, "EXACT_SAMPLE", 40)
    feats, cat, qry, _ = _setup(n_catalog=200, n_query=150, seed=4)
    vectors, _ = metric_vectors(feats, "l2", cat)
    none = [set()] * len(qry)

    def run(seed):
        return _search(feats, cat, qry, none, search_k=2000, seed=seed)

    res, again, other = run(7), run(7), run(8)
    assert res.found.idx.shape == (150, 5) and res.exact.idx.shape == (40, 5)
    rows = res.exact_rows
    assert len(set(rows)) == 40 and list(rows) == sorted(rows) and rows.max() < 150
    np.testing.assert_array_equal(rows, again.exact_rows)
    assert not np.array_equal(rows, other.exact_rows)
    truth = exact_search(vectors[qry[rows]], vectors[cat], "l2", 5, item_rows=cat,
                         exclude=[set()] * 40, device="cpu")
    np.testing.assert_array_equal(res.exact.idx, truth.idx)
    report = res.report
    assert report["exact_queries"] == 40
    low, high = report["top1_agreement_95"]
    assert low <= report["top1_agreement"] <= high and high - low > 0
    save_neighbours(tmp_path / "v.npz", res)
    back = load_neighbours(tmp_path / "v.npz", "x.y.l2")
    np.testing.assert_array_equal(back.exact_rows, rows)
