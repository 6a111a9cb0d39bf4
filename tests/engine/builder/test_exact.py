"""Exact search streamed over catalog parts gives what one pass over the whole does."""

import numpy as np
import pytest

from engine.builder.exact import exact_search
from engine.builder.metric import MetricSpace, catalog_parts
from engine.formats.shards import FeatureShards, ShardPlan, ShardWriter


@pytest.mark.parametrize("metric", ["l1", "l2", "hamming", "cosine"])
def test_exact_search_over_parts_equals_one_pass(metric, tmp_path):
    rng = np.random.default_rng(3)
    feats = np.maximum(rng.standard_normal((260, 16)), 0).astype(np.float16)
    feats[200:210] = feats[5]  # ties, some across parts, resolved in catalog order
    cat, qry = np.arange(2, 250, 1), np.array([1, 250, 251, 252, 255])
    cat = cat[cat != 5]
    space = MetricSpace.fit(feats, metric, cat)
    queries = space.vectors(feats[qry])
    exclude = [{201, 203}, set(), {7}, set(), set(range(100, 140))]
    whole = exact_search(queries, space.vectors(feats[cat]), metric, 12, item_rows=cat,
                         exclude=exclude, device="cpu")
    parts = ((pos, space.vectors(rows)) for pos, rows in
             catalog_parts(_shards(tmp_path, feats, 37), cat))
    streamed = exact_search(queries, parts, metric, 12, item_rows=cat, exclude=exclude,
                            device="cpu")
    np.testing.assert_array_equal(streamed.idx, whole.idx)
    np.testing.assert_allclose(streamed.dist, whole.dist, rtol=1e-6)
    assert not {201, 203} & set(streamed.idx[0]) and 7 not in streamed.idx[2]


def _shards(tmp_path, rows, n):
    writer = ShardWriter(tmp_path / "k", ShardPlan(len(rows), n), "fp")
    for p in writer.missing():
        writer.write(p, rows[slice(*writer.plan.span(p))])
    writer.finish()
    return FeatureShards(tmp_path / "k")


def test_catalog_parts_cover_the_catalog_rows_once(tmp_path):
    feats = _shards(tmp_path, np.arange(50, dtype=np.float16)[:, None], 7)
    cat = np.array([0, 3, 6, 7, 8, 20, 21, 49])
    got = list(catalog_parts(feats, cat))
    assert len(got) == 5  # parts 0, 1, 2, 3 and 7 hold catalog rows
    positions = np.concatenate([p for p, _ in got])
    np.testing.assert_array_equal(positions, np.arange(len(cat)))
    np.testing.assert_array_equal(np.concatenate([r for _, r in got])[:, 0], cat)
