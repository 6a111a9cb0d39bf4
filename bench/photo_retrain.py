"""Does retraining on votes cast on visitors' photos help on photos? (issue 18)

Photos are fresh query images of the catalog source (no build query, no pool query)
"taken with a phone" (`phone_photo`: the garment on a lit, uneven background under a
colour cast, turned a little, cropped, softened, saved as JPEG). The simulated taste
judges the garment as it is (the clean image); the variants only see the photo. The
photos' features and first matches come from the query service's own code (its WSGI
app, features=1), so the vote file holds what the web app's export would.

Per taste and crowd seed:
1. the game: N catalog votes from an honest crowd (`engine crowd`'s campaign);
2. the try-it-out page: P training photos, each distinct first match of the build's
   variants judged once, dope with the honest crowd's mean approval of the pair;
3. one vote file (format 2, with photo records), retrained twice on the same fresh
   pool: `--photo-votes ignore` and `use` (published or not: the gate is reported;
   with `use`, photo weights are learned and gated on the photo votes);
4. each challenger scored by the taste on E evaluation photos (the same photos in every
   run; the service's first match from the challenger's build) and on the fresh
   catalog pool, against its parent.

    python bench/photo_retrain.py [--build build/default] [--tastes tone,look] \
        [--seeds 7400,7401,7402,7403,7404] [--votes 1000] [--photos 250] \
        [--eval-photos 400] [--out bench-photo-retrain.json]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
# bench/engine.py would shadow the engine package: the repository root comes first.
sys.path.insert(0, str(ROOT))
EVAL_SEED = 1  # the evaluation photos: the same in every run
POOL_SEED = 2


def phone_photo(img: Image.Image, rng: np.random.Generator, size: int = 112) -> bytes:
    """Return a JPEG of the garment as a phone might see it."""
    grey = np.asarray(img.convert("L").resize((size, size), Image.Resampling.BILINEAR),
                      np.float32) / 255.0
    alpha = np.clip(grey * 4.0, 0.0, 1.0)[..., None]
    ramp = np.linspace(-1, 1, size)
    angle = rng.uniform(0, 2 * np.pi)
    light = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    background = rng.uniform(0.55, 0.85) + 0.12 * light + rng.normal(0, 0.015, (size, size))
    cast = rng.uniform(0.85, 1.15, 3)
    rgb = (alpha * grey[..., None] + (1 - alpha) * background[..., None]) * cast
    photo = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    fill = tuple(int(c) for c in np.asarray(photo)[0, 0])
    photo = photo.rotate(rng.uniform(-12, 12), Image.Resampling.BILINEAR, fillcolor=fill)
    keep = rng.uniform(0.8, 0.95) * size
    x, y = rng.uniform(0, size - keep, 2)
    photo = photo.crop((x, y, x + keep, y + keep)).resize((size, size))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=int(rng.integers(55, 86)))
    return out.getvalue()


def search_photo(app, data: bytes) -> dict:
    """The service's answer for a photo: first matches and features (features=1)."""
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/search",
               "QUERY_STRING": "k=1&features=1", "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data)}
    return json.loads(b"".join(app(environ, lambda *_: None)))


class Photos:
    """The photo sets: each photo's id, category, clean picture, and service answer."""

    def __init__(self, build_dir: Path, n_train: int, n_eval: int, work: Path):
        from engine.formats.builddir import open_build, thumbnail_bytes
        from engine.retrain.pool import source_catalog
        from engine.serve.app import QueryService
        from engine.serve.searcher import Searcher

        build = open_build(build_dir)
        catalog = source_catalog(build)
        used = {build.table.image_id[i] for i in build.table.query_rows}
        free = [i for i in catalog.query_indices if catalog.image_id[i] not in used]
        order = np.random.default_rng(EVAL_SEED).permutation(len(free))
        self.eval_rows = [free[i] for i in order[:n_eval]]
        self.spare = [free[i] for i in order[n_eval:]]
        self.n_train, self.catalog, self.work = n_train, catalog, work
        self.app = QueryService(Searcher(build_dir))
        (work / "clean").mkdir(exist_ok=True)
        self.thumbnail_bytes = thumbnail_bytes
        self.eval = self.shoot(self.eval_rows, np.random.default_rng(EVAL_SEED))
        self.unseen = self.unseen_catalog(build)

    def unseen_catalog(self, build) -> list[dict]:
        """The catalog items the build has no thumbnail of (the game never showed them,
        but a photo's match may be any item): their clean pictures for the taste."""
        index = {image_id: i for i, image_id in enumerate(self.catalog.image_id)}
        out = []
        for r in build.table.catalog_rows:
            row = build.rows[r]
            if not row.get("thumbnail"):
                clean = self.work / "clean" / f"{row['image_id']}.png"
                clean.write_bytes(self.thumbnail_bytes(self.catalog[index[row['image_id']]])[0])
                out.append({"query_id": row["image_id"], "clean": clean,
                            "category": row["category"]})
        return out

    def train(self, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        rows = [self.spare[i] for i in rng.permutation(len(self.spare))[:self.n_train]]
        return self.shoot(rows, rng)

    def shoot(self, rows: list[int], rng) -> list[dict]:
        out = []
        for i in rows:
            image_id = self.catalog.image_id[i]
            clean = self.work / "clean" / f"{image_id}.png"
            if not clean.exists():
                clean.write_bytes(self.thumbnail_bytes(self.catalog[i])[0])
            answer = search_photo(self.app, phone_photo(self.catalog[i], rng))
            out.append({"query_id": f"photo:{image_id}", "clean": clean,
                        "category": self.catalog.rows[i].category, "answer": answer})
        return out


def taste_judge(build_dir: Path, taste_name: str, photos: list[dict]):
    from engine.crowd.simulate import Population, judge_build
    from engine.crowd.taste import load_taste
    from engine.formats.builddir import read_build

    taste = load_taste(taste_name)
    population = Population.from_taste(taste)
    judged = judge_build(read_build(build_dir), taste, population)
    judged.judge.add_images([p["query_id"] for p in photos], [p["category"] for p in photos],
                            [p["clean"] for p in photos])
    return taste, population, judged


def approval(judged, population, queries: list[str], matches: list[str]) -> np.ndarray:
    j = judged.judge
    return population.honest_truth(j.logits(queries, matches), j.basis(queries, matches))


def photo_votes(train: list[dict], judged, population, build_id: str, seed: int):
    """Each photo's distinct first matches judged once (dope with the honest crowd's
    mean approval), and the photos' records."""
    from engine.formats.votes import Vote, parse_photo

    rng = np.random.default_rng(seed + 1)
    votes, records = [], []
    for p in train:
        firsts = {}
        for slug, found in sorted(p["answer"]["variants"].items()):
            if found:
                firsts.setdefault(found[0]["image_id"], slug)
        matches = list(firsts)
        dope = rng.random(len(matches)) < approval(judged, population,
                                                   [p["query_id"]] * len(matches), matches)
        for m, d in zip(matches, dope, strict=True):
            votes.append(Vote(vote_id=10**6 + len(votes), query_id=p["query_id"], match_id=m,
                              variant=firsts[m], verdict="dope" if d else "nope",
                              created_at="2026-12-05T00:00:00+00:00", decision_ms=None,
                              voter=f"photo-voter-{len(votes) % 97}", build_id=build_id,
                              source="photo", rank=1))
        records.append(parse_photo({"query_id": p["query_id"], "build_id": build_id,
                                    "features": p["answer"]["features"]}))
    return votes, records


def features_of(photos: list[dict]) -> dict[str, np.ndarray]:
    import base64

    keys = photos[0]["answer"]["features"]
    return {k: np.stack([np.frombuffer(base64.b64decode(p["answer"]["features"][k]), "<f2")
                         for p in photos]).astype(np.float32) for k in keys}


def score(out: Path, slug: str, parent: str, photos: list[dict], judged, population,
          taste) -> dict:
    """The challenger's and its parent's approval on the evaluation photos and on the
    build's fresh catalog pool."""
    from engine.crowd.simulate import judge_build
    from engine.formats.builddir import read_build
    from engine.serve.searcher import Searcher

    answers = Searcher(out).search_features(features_of(photos), len(photos), 1)
    queries = [p["query_id"] for p in photos]
    on_photos = {s: float(approval(judged, population, queries,
                                   [a[s][0]["image_id"] for a in answers]).mean())
                 for s in (slug, parent)}
    pool = judge_build(read_build(out), taste, population).truth
    return {"photos": on_photos, "pool": {s: pool[s] for s in (slug, parent)}}


def one_run(args, photos: Photos, taste_name: str, seed: int, work: Path) -> dict:
    from engine.crowd.campaign import campaign, export_votes
    from engine.formats.votes import write_votes
    from engine.retrain.challenger import retrain

    train = photos.train(seed)
    taste, population, judged = taste_judge(args.build, taste_name,
                                            train + photos.eval + photos.unseen)
    sim = list(campaign(judged, population, args.votes, seed))
    header, rows = export_votes(judged, sim, taste=taste, population=population, seed=seed)
    pv, records = photo_votes(train, judged, population, judged.build.build_id, seed)
    path = work / f"votes-{taste_name}-{seed}.jsonl"
    write_votes(path, header, rows + pv, records)
    run = {"taste": taste_name, "seed": seed, "catalog_votes": len(rows),
           "photo_votes": len(pv), "photo_dope": round(np.mean([v.verdict == "dope"
                                                                 for v in pv]), 3)}
    for mode in ("ignore", "learn"):
        out = work / f"challenger-{taste_name}-{seed}-{mode}"
        result = retrain(args.build, path, out, parent="auto", queries=500, seed=POOL_SEED,
                         photo_votes=mode, write_gated=True)
        s = score(out, result.slug, result.parent, photos.eval, judged, population, taste)
        shutil.rmtree(out)
        run[mode] = {"parent": result.parent, "published": result.published,
                     "gate": result.gate, "used_photo_votes": result.counts["photo_votes"],
                     "photo_gate": result.photo,
                     "photo_weights": bool(result.photo and result.photo.get("used")),
                     "photo_gain": round(s["photos"][result.slug] - s["photos"][result.parent], 4),
                     "pool_gain": round(s["pool"][result.slug] - s["pool"][result.parent], 4),
                     "parent_on_photos": round(s["photos"][result.parent], 4),
                     "parent_on_pool": round(s["pool"][result.parent], 4)}
    return run


def summary(runs: list[dict]) -> list[str]:
    lines = ["| taste | photo votes used | gain on photos (points), per seed | median | "
             "gain on the catalog pool, per seed | median | published | photo weights |",
             "|---|---|---|---:|---|---:|---:|---:|"]
    for taste in sorted({r["taste"] for r in runs}):
        rs = [r for r in runs if r["taste"] == taste]
        for mode, label in (("ignore", "no"), ("learn", "yes")):
            photo = [100 * r[mode]["photo_gain"] for r in rs]
            pool = [100 * r[mode]["pool_gain"] for r in rs]
            lines.append(f"| {taste} | {label} | {', '.join(f'{g:+.1f}' for g in photo)} | "
                         f"{statistics.median(photo):+.1f} | "
                         f"{', '.join(f'{g:+.1f}' for g in pool)} | "
                         f"{statistics.median(pool):+.1f} | "
                         f"{sum(r[mode]['published'] for r in rs)}/{len(rs)} | "
                         f"{sum(r[mode].get('photo_weights', False) for r in rs)}/{len(rs)} |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "default")
    parser.add_argument("--tastes", default="tone,look")
    parser.add_argument("--seeds", default="7400,7401,7402,7403,7404")
    parser.add_argument("--votes", type=int, default=1000)
    parser.add_argument("--photos", type=int, default=250)
    parser.add_argument("--eval-photos", type=int, default=400)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dope-bench-photo-retrain-"))
    runs = []
    try:
        photos = Photos(args.build, args.photos, args.eval_photos, work)
        for taste in args.tastes.split(","):
            for seed in map(int, args.seeds.split(",")):
                runs.append(one_run(args, photos, taste, seed, work))
                r = runs[-1]
                print(f"{taste} seed {seed}: photo votes {r['photo_votes']}; on photos "
                      f"{r['ignore']['photo_gain']:+.3f} without, {r['learn']['photo_gain']:+.3f} "
                      f"with; on the pool {r['ignore']['pool_gain']:+.3f} / "
                      f"{r['learn']['pool_gain']:+.3f}", flush=True)
                if args.out:
                    args.out.write_text(json.dumps({"args": vars(args) | {
                        "build": str(args.build), "out": str(args.out)}, "runs": runs},
                        indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(summary(runs)))
    return {"runs": runs}


if __name__ == "__main__":
    main()
