"""`--executor ray` in the index stage: each part's IVF lists assigned on a Ray Data pool.

Assigning every catalog row its nearest centroid is the IVF build's computing (rows x
lists x dims); each actor reads whole parts from the build directory (shared storage, as
for extraction), turns them into the metric's vectors and assigns them. The merge, writing
every row at its place in the list file, stays on the driver (builder.ivf.build_ivf): it
is reading and writing, one part at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.builder.ivf import assign
from engine.builder.metric import MetricSpace, catalog_part
from engine.builder.ray_extract import start_ray
from engine.formats.shards import FeatureShards

logger = logging.getLogger(__name__)


class ListAssigner:
    """A Ray actor: one variant's centroids; assigns whole parts' catalog rows."""

    def __init__(self, feature_dir: str, space: MetricSpace, centroids: np.ndarray,
                 catalog_rows: np.ndarray):
        import faiss

        from engine.builder.ivf import faiss_metric

        self.features = FeatureShards(Path(feature_dir))
        self.space, self.catalog_rows = space, catalog_rows
        self.quantizer = faiss.IndexFlat(centroids.shape[1], faiss_metric(space.metric))
        self.quantizer.add(centroids)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        positions, lists = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)]
        for part in batch["part"]:
            found, rows = catalog_part(*self.features.part(int(part)), self.catalog_rows)
            if len(found):
                positions.append(found)
                lists.append(assign(self.quantizer, self.space.vectors(rows)))
        return {"position": np.concatenate(positions), "list": np.concatenate(lists)}


def ray_lists(feature_dir: Path, space: MetricSpace, catalog_rows: np.ndarray):
    """Return build_ivf's `assign_all`: every catalog position's list, assigned on Ray."""

    def assign_all(quantizer, n_items: int) -> np.ndarray:
        ray, actors, _ = start_ray()
        parts = FeatureShards(feature_dir).plan.parts
        logger.info("%s: lists of %d parts on Ray, %d actor(s)", feature_dir.name, parts,
                    actors)
        centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
        assigned = ray.data.from_items([{"part": p} for p in range(parts)]).map_batches(
            ListAssigner, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1, fn_constructor_kwargs={
                "feature_dir": str(feature_dir), "space": space, "centroids": centroids,
                "catalog_rows": catalog_rows}).to_pandas()
        listed = np.full(n_items, -1, dtype=np.int32)
        listed[assigned["position"].to_numpy()] = assigned["list"].to_numpy()
        return listed

    return assign_all
