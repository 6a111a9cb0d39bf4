"""`--executor ray` on a local two-CPU Ray cluster makes the plain build's parts, IVF lists
and pairs (real networks, a small catalog)."""

from dataclasses import replace

import numpy as np
import pytest

from engine.builder.pipeline import build
from engine.builder.ray_extract import pool_size
from engine.formats.builddir import feature_keys, load_features
from engine.formats.state import BuildOptions


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_executor_makes_the_plain_builds_parts_and_pairs(engine_fmnist_dir, tmp_path,
                                                             ray_cluster):
    opts = BuildOptions(catalog_path=str(engine_fmnist_dir), limit=40, queries=8,
                        image_size=32, variants="offline", device="cpu", shard_rows=16,
                        batch_size=8, index="faiss")  # IVF lists assigned on Ray too
    build(tmp_path / "plain", opts, tsne=False)
    build(tmp_path / "ray", replace(opts, executor="ray"), tsne=False)
    assert (tmp_path / "ray" / "pairs.jsonl").read_bytes() == \
        (tmp_path / "plain" / "pairs.jsonl").read_bytes()
    assert feature_keys(tmp_path / "ray") == feature_keys(tmp_path / "plain")
    for key in feature_keys(tmp_path / "plain"):
        np.testing.assert_array_equal(np.asarray(load_features(tmp_path / "ray", key)),
                                      np.asarray(load_features(tmp_path / "plain", key)))
    for ivf in (tmp_path / "plain" / "indexes").glob("*.ivf"):
        for name in ("positions.npy", "offsets.npy", "vectors.npy"):
            assert (ivf / name).read_bytes() == \
                (tmp_path / "ray" / "indexes" / ivf.name / name).read_bytes()


def test_a_list_assigner_gives_the_lists_the_plain_build_gives(tmp_path):
    """The Ray actor's work, run here: whole parts read, only catalog rows assigned."""
    from engine.builder.ivf import assign_parts, train_quantizer
    from engine.builder.metric import MetricSpace
    from engine.builder.ray_index import ListAssigner
    from engine.formats.shards import FeatureShards, ShardPlan, ShardWriter

    rng = np.random.default_rng(3)
    feats = rng.gamma(1.0, size=(50, 8)).astype(np.float16)
    writer = ShardWriter(tmp_path / "f", ShardPlan(50, 16), "fp")
    for p in range(writer.plan.parts):
        writer.write(p, feats[p * 16:(p + 1) * 16])
    assert writer.finish()
    cat = np.array([0, 3, 4, 17, 18, 19, 33, 40, 49])  # part 1 .. part 3, gaps between
    space = MetricSpace.fit(feats, "cosine", cat)
    quantizer = train_quantizer(space.vectors(feats[cat]), "cosine", 3)
    actor = ListAssigner(str(tmp_path / "f"), space, quantizer.reconstruct_n(0, 3), cat)
    out = actor({"part": np.array([3, 0, 2, 1])})
    here = assign_parts(lambda: space.parts(FeatureShards(tmp_path / "f"), cat), quantizer,
                        len(cat))
    np.testing.assert_array_equal(np.sort(out["position"]), np.arange(len(cat)))
    np.testing.assert_array_equal(out["list"], here[out["position"]])


def test_the_actor_pool_leaves_a_cpu_free_and_takes_every_gpu():
    assert pool_size({"CPU": 2.0}) == (1, 0.0)  # ray issue 44687: never every CPU
    assert pool_size({"CPU": 1.0}) == (1, 0.0)
    assert pool_size({"CPU": 16.0, "GPU": 2.0}) == (2, 1.0)
