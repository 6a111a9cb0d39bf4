"""`--executor ray` on a local two-CPU Ray cluster makes the plain build's parts and pairs
(real networks, a small catalog)."""

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
                        batch_size=8)
    build(tmp_path / "plain", opts, tsne=False)
    build(tmp_path / "ray", replace(opts, executor="ray"), tsne=False)
    assert (tmp_path / "ray" / "pairs.jsonl").read_bytes() == \
        (tmp_path / "plain" / "pairs.jsonl").read_bytes()
    assert feature_keys(tmp_path / "ray") == feature_keys(tmp_path / "plain")
    for key in feature_keys(tmp_path / "plain"):
        np.testing.assert_array_equal(np.asarray(load_features(tmp_path / "ray", key)),
                                      np.asarray(load_features(tmp_path / "plain", key)))


def test_the_actor_pool_leaves_a_cpu_free_and_takes_every_gpu():
    assert pool_size({"CPU": 2.0}) == (1, 0.0)  # ray issue 44687: never every CPU
    assert pool_size({"CPU": 1.0}) == (1, 0.0)
    assert pool_size({"CPU": 16.0, "GPU": 2.0}) == (2, 1.0)
