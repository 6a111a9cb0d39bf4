"""The features stage, streamed into shards (formats.shards): memory stays flat.

Each pretrained network reads the images in batches (a DataLoader with `--workers`) and
its rows are written as float16 parts as they are made, never held whole. vgg16-fashion
then trains its head on a sample of the catalog's conv maps (at most `train_rows`) and
embeds the conv maps part by part. Finished parts are kept: running the stage again on
the same directory (a killed build resumed, or `extract --shard i/N` workers sharing one
directory) makes only the parts still missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.builder.catalog import Catalog, RowsView
from engine.builder.variants import variants_of
from engine.formats.builddir import shard_dir
from engine.formats.shards import INDEX_FILE, FeatureShards, PartFiller, ShardPlan, ShardWriter
from engine.formats.state import BuildOptions, BuildState
from engine.nets import TRUNK_TAPS
from engine.stats import seeded_sample

logger = logging.getLogger(__name__)

PRETRAINED = ("vgg16-imagenet", "mobilenet_v2-imagenet")
FASHION = "vgg16-fashion"
TRUNK_DIR = "trunk"  # the conv maps vgg16-fashion reads; removed once its rows are made
CHECKPOINT = "checkpoints/vgg16-fashion.pt"


@dataclass(frozen=True)
class WorkerShare:
    """Worker `index` of `count` makes the parts p with p % count == index."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> WorkerShare:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/N (for example 0/4), "
                             f"got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: i must be in 0..N-1 and N >= 1 "
                             f"(worker {index} of {count} does not exist)")
        return cls(index, count)

    def takes(self, part: int) -> bool:
        return part % self.count == self.index


EVERY_PART = WorkerShare()  # one worker: every part


def digest(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def catalog_fingerprint(image_id: list[str], pixel_hash: list[str]) -> str:
    """Name a catalog's rows: their ids and decoded pixels, in order."""
    h = hashlib.sha256()
    for image, pixels in zip(image_id, pixel_hash, strict=True):
        h.update(f"{image} {pixels}\n".encode())
    return h.hexdigest()[:16]


# --- pretrained networks ------------------------------------------------------------

def pretrained_outputs(out: Path, network: str, layers: list[str],
                       fashion_input: str | None) -> dict[str, Path]:
    """Return {tap: shard directory} for one network's pass."""
    dirs = {layer: shard_dir(out, f"{network}.{layer}") for layer in layers}
    if fashion_input is not None:
        tap = TRUNK_TAPS[fashion_input]
        dirs.setdefault(tap, out / TRUNK_DIR / tap)
    return dirs


def extract_network(out: Path, images, catalog_fp: str, network: str, dirs: dict[str, Path],
                    opts: BuildOptions, share: WorkerShare, progress: bool = True) -> dict:
    """Make this worker's missing parts of one network's taps; finish each key whose parts
    are all there. Return the pass's report."""
    from engine.builder import variant_features as vf

    origin = vf.weights_origin(network, allow_download=opts.allow_download)
    plan = ShardPlan(len(images), opts.shard_rows)
    writers = {tap: ShardWriter(d, plan, digest(catalog=catalog_fp, network=network, tap=tap,
                                                image_size=opts.image_size, **origin))
               for tap, d in dirs.items()}
    todo = sorted({p for w in writers.values() for p in w.missing() if share.takes(p)})
    start = time.perf_counter()
    if todo and opts.executor == "ray":
        from engine.builder.ray_extract import make_parts

        make_parts(images, network, writers, todo, opts)
    elif todo:
        rows = np.concatenate([np.arange(*plan.span(p)) for p in todo])
        fillers = {tap: PartFiller(w, todo) for tap, w in writers.items()}
        for batch in vf.pass_batches(RowsView(images, rows), network, list(dirs),
                                     image_size=opts.image_size, device=opts.device,
                                     batch_size=opts.batch_size, num_workers=opts.workers,
                                     allow_download=opts.allow_download, progress=progress):
            for tap, arr in batch.items():
                fillers[tap].add(arr)
        for filler in fillers.values():
            filler.close()
    seconds = time.perf_counter() - start
    made = sum(plan.span(p)[1] - plan.span(p)[0] for p in todo)
    finished = all([w.finish() for w in writers.values()])
    logger.info("%s: %d rows in %d parts made in %.1f s (%d parts kept)%s", network, made,
                len(todo), seconds, plan.parts - len(todo), "" if finished else
                "; other workers' parts are still missing")
    return {"seconds": round(seconds, 3), "rows_made": made, "parts_made": len(todo),
            "parts": plan.parts, "finished": finished,
            "images_per_second": round(made / max(seconds, 1e-9), 1), **origin}


# --- vgg16-fashion --------------------------------------------------------------------

def train_sample(catalog_rows: np.ndarray, train_rows: int, seed: int) -> np.ndarray:
    """Return the catalog rows the head trains on: all of them up to train_rows, else a
    seeded random train_rows of them, in order."""
    return catalog_rows[seeded_sample(len(catalog_rows), train_rows, seed)]


def fashion_features(out: Path, labels: np.ndarray, categories: list[str],
                     catalog_rows: np.ndarray, layers: list[str], opts: BuildOptions,
                     keep_trunk: bool = False) -> dict:
    """Train (or reload) the head on a sample of the stored conv maps and write its rows."""
    from engine.builder import variant_features as vf

    tap = TRUNK_TAPS[opts.fashion_input]
    trunk = FeatureShards(out / TRUNK_DIR / tap)
    fp = digest(conv=trunk.meta["fingerprint"], fashion_input=opts.fashion_input,
                seed=opts.seed, train_rows=opts.train_rows, categories=categories)
    writers = {layer: ShardWriter(shard_dir(out, f"{FASHION}.{layer}"), trunk.plan, fp)
               for layer in layers}
    todo = sorted({p for w in writers.values() for p in w.missing()})
    info: dict = {}
    if todo:
        head = vf.load_fashion(out / CHECKPOINT, fp)
        if head is None:
            rows = train_sample(catalog_rows, opts.train_rows, opts.seed)
            head, info = vf.train_fashion(
                trunk[rows], labels[rows], categories, fashion_input=opts.fashion_input,
                image_size=opts.image_size, seed=opts.seed, device=opts.device,
                checkpoint=out / CHECKPOINT, fingerprint=fp, allow_download=opts.allow_download)
            info["checkpoint"] = CHECKPOINT
        info["embed_seconds"] = _embed_parts(head, trunk, todo, writers, opts.device)
    for w in writers.values():
        w.finish()
    if not keep_trunk:
        shutil.rmtree(out / TRUNK_DIR)
    return info


def _embed_parts(head, trunk: FeatureShards, todo: list[int], writers: dict,
                 device: str) -> float:
    from engine.builder import variant_features as vf

    start = time.perf_counter()
    parts = (trunk.part(p) for p in todo)  # one part in memory at a time, never a list
    fillers = {layer: PartFiller(w, todo) for layer, w in writers.items()}
    for batch in vf.fashion_batches(head, parts, list(writers), device=device):
        for layer, arr in batch.items():
            fillers[layer].add(arr)
    for filler in fillers.values():
        filler.close()
    return round(time.perf_counter() - start, 3)


# --- the stage --------------------------------------------------------------------------

def needed_layers(variants) -> dict[str, list[str]]:
    """Return {network: [layers]} the variants use."""
    out: dict[str, list[str]] = {}
    for v in variants:
        layers = out.setdefault(v.network, [])
        if v.layer not in layers:
            layers.append(v.layer)
    return out


def features_stage(out: Path, catalog: Catalog, state: BuildState, *, pretrained: bool = True,
                   fashion: bool = True, share: WorkerShare = EVERY_PART) -> None:
    """Stream the features the variants need into shards (builder.extract): the
    pretrained networks' parts (this worker's share of them), then vgg16-fashion's."""
    needed = needed_layers(variants_of(state))
    o = state.build_options
    report = state.reports.setdefault("features", {})
    report |= {"image_size": o.image_size, "device": o.device, "images": len(catalog)}
    nets = report.setdefault("networks", {})
    catalog_fp = catalog_fingerprint(catalog.image_id, catalog.pixel_hash)
    # The conv maps vgg16-fashion reads are made until its own rows are (then removed).
    wants_fashion = FASHION in needed and not finished(out, FASHION, needed[FASHION])
    trunk = out / TRUNK_DIR / TRUNK_TAPS[o.fashion_input]
    for network in PRETRAINED if pretrained else ():
        fashion_input = o.fashion_input if network == PRETRAINED[0] and wants_fashion else None
        if network in needed or fashion_input:
            dirs = pretrained_outputs(out, network, needed.get(network, []), fashion_input)
            nets[network] = extract_network(out, catalog, catalog_fp, network, dirs, o, share)
    if not (fashion and wants_fashion):
        return
    if not (trunk / INDEX_FILE).is_file():  # train run on a build extracted without it
        extract_network(out, catalog, catalog_fp, PRETRAINED[0],
                        {trunk.name: trunk}, o, EVERY_PART)
    nets.setdefault(FASHION, {}).update(fashion_features(
        out, catalog.label, list(catalog.categories), catalog.catalog_indices,
        needed[FASHION], o))


def finished(out: Path, network: str, layers: list[str]) -> bool:
    return all((shard_dir(out, f"{network}.{layer}") / INDEX_FILE).is_file()
               for layer in layers)
