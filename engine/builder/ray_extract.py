"""`--executor ray`: a network's missing parts made by a Ray Data actor pool.

Each dataset row names one part; each actor holds one model and writes the parts it is
given straight into the build directory (builder.extract's ShardWriter), so every node
must see that directory (shared storage) and the parts are the plain executor's, one
DataLoader per part. The pool leaves one CPU free (an actor pool that takes every CPU
hangs: ray issue 44687); with GPUs, one actor per GPU. `RAY_ADDRESS` set: joins that
cluster; unset: starts a local one. Ray is an optional extra (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engine.builder.catalog import RowsView
from engine.formats.shards import PartFiller, ShardPlan, ShardWriter
from engine.formats.state import BuildOptions

logger = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    return ray


class PartMaker:
    """A Ray actor: one network's model; makes and writes whole parts."""

    def __init__(self, images, network: str, dirs: dict[str, str], plan: ShardPlan,
                 fingerprints: dict[str, str], opts: dict):
        import engine.nets.tvcompat  # noqa: F401 (torchvision through the shim, first)
        from engine.builder import variant_features as vf

        self.vf, self.images, self.opts = vf, images, BuildOptions(**opts)
        self.taps = list(dirs)
        self.writers = {tap: ShardWriter(Path(d), plan, fingerprints[tap])
                        for tap, d in dirs.items()}
        self.model, self.device = vf.network_model(network, self.taps, device=self.opts.device,
                                                   allow_download=self.opts.allow_download)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for part in batch["part"]:
            part = int(part)
            rows = np.arange(*next(iter(self.writers.values())).plan.span(part))
            fillers = {tap: PartFiller(w, [part]) for tap, w in self.writers.items()}
            for out in self.vf.model_batches(self.model, self.device,
                                             RowsView(self.images, rows), self.taps,
                                             image_size=self.opts.image_size,
                                             batch_size=self.opts.batch_size, progress=False):
                for tap, arr in out.items():
                    fillers[tap].add(arr)
            for filler in fillers.values():
                filler.close()
        return {"part": batch["part"]}


def pool_size(resources: dict) -> tuple[int, float]:
    """Return (actors, GPUs per actor) for a cluster's resources."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, 1.0
    return max(1, int(resources.get("CPU", 1)) - 1), 0.0


def start_ray():
    """Join RAY_ADDRESS's cluster, or start a local one; return (ray, actors, GPUs each)."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return (ray, *pool_size(ray.cluster_resources()))


def make_parts(images, network: str, writers: dict[str, ShardWriter], todo: list[int],
               opts: BuildOptions) -> None:
    """Make `todo` parts of one network's taps on Ray."""
    from dataclasses import asdict

    ray, actors, gpus = start_ray()
    logger.info("%s: %d parts on Ray, %d actor(s), %g GPU each", network, len(todo), actors,
                gpus)
    any_writer = next(iter(writers.values()))
    dataset = ray.data.from_items([{"part": p} for p in todo])
    made = dataset.map_batches(
        PartMaker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus, num_cpus=1,
        fn_constructor_kwargs={"images": images, "network": network,
                               "dirs": {t: str(w.dir) for t, w in writers.items()},
                               "plan": any_writer.plan,
                               "fingerprints": {t: w.fingerprint for t, w in writers.items()},
                               "opts": asdict(opts)})
    done = sorted(int(p) for p in made.to_pandas()["part"])
    if done != sorted(todo):
        raise RuntimeError(f"Ray made parts {done}, not {sorted(todo)}")
