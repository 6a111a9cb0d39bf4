"""How a build grows with its catalog: wall time per stage, peak memory, index agreement.

Runs `python -m engine build` once per size (same queries, 64 px, no t-SNE) as a child
process and reports, per size:
- wall seconds per stage (engine-state.json's timings) and in all;
- peak RSS (the kernel's ru_maxrss for the child) and, sampled every 0.2 s from
  /proc/<pid>/status, the peak of its anonymous part (RssAnon: memory the build holds)
  and of its file-backed part (RssFile: memory-mapped shards and indexes, which the
  kernel can drop and read again);
- each variant's index kind and its top-1 agreement with exact search on the sample
  (with its 95% interval), and the build's size on disk.

    python bench/growth.py --sizes 6000:1,6000:4,0:1,0:4 [--queries 500] \
        [--work /tmp/growth] [--keep] [--out bench-growth.json] [-- EXTRA BUILD OPTIONS]

A size is LIMIT:REPEAT: LIMIT catalog items of Fashion-MNIST (0: all 60,000) and
REPEAT synthetic copies of each (`--repeat`), so 0:4 is 240,000 items.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_build(out: Path, limit: int, repeat: int, queries: int, extra: list[str]) -> dict:
    """Run one build; return wall seconds and peak memory (MiB)."""
    cmd = [sys.executable, "-m", "engine", "-q", "build", "--catalog", "fashion-mnist",
           "--limit", str(limit), "--repeat", str(repeat), "--queries", str(queries),
           "--variants", "auto", "--image-size", "64", "--device", "auto", "--seed", "0",
           "--no-tsne", "--out", str(out), *extra]
    peaks = {"RssAnon": 0, "RssFile": 0}
    start = time.perf_counter()
    log = open(out.with_name(out.name + ".log"), "w")  # noqa: SIM115 (the child's lifetime)
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            for field in peaks:
                peaks[field] = max(peaks[field], _status_kb(child.pid, field))

    threading.Thread(target=sample, daemon=True).start()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    log.close()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"build failed ({code}); its output: {log.name}")
    return {"wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "peak_anon_mib": round(peaks["RssAnon"] / 1024),
            "peak_file_mib": round(peaks["RssFile"] / 1024), "command": " ".join(cmd[1:])}


def describe(out: Path) -> dict:
    """Per-stage timings, counts, index kinds and agreement of a finished build."""
    state = json.loads((out / "engine-state.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    pairs = state["reports"]["pairs"]
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"catalog": manifest["counts"]["catalog"], "queries": manifest["counts"]["queries"],
            "timings": state["timings"], "disk_mib": round(disk / 2**20),
            "fashion_train_rows": state["reports"]["features"]["networks"]
            .get("vgg16-fashion", {}).get("n_train"),
            "variants": {slug: {k: r.get(k) for k in ("index", "top1_agreement",
                                                      "top1_agreement_95", "recall_at_10",
                                                      "exact_queries", "search_k", "nprobe")}
                         for slug, r in pairs.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="6000:1,6000:4,0:1,0:4")
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--work", type=Path, default=Path("/tmp/growth"))
    p.add_argument("--keep", action="store_true", help="Keep the builds.")
    p.add_argument("--out", type=Path, default=Path("bench-growth.json"))
    p.add_argument("extra", nargs="*", help="More build options, after --.")
    args = p.parse_args()
    results = []
    for size in args.sizes.split(","):
        limit, repeat = (int(x) for x in size.split(":"))
        args.work.mkdir(parents=True, exist_ok=True)
        out = args.work / f"build-{limit}x{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
        row = {"size": size, **run_build(out, limit, repeat, args.queries, args.extra)}
        row |= describe(out)
        results.append(row)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: row[k] for k in ("size", "catalog", "wall_s", "peak_rss_mib",
                                              "peak_anon_mib", "peak_file_mib")}), flush=True)
        if not args.keep:
            shutil.rmtree(out)
    print(markdown(results))


def markdown(results: list[dict]) -> str:
    stages = ["catalog", "features", "index", "pairs", "thumbnails", "evaluate"]
    lines = ["| catalog | " + " | ".join(stages) + " | total | peak RSS | peak anon | "
             "peak file | disk |", "|---" * (len(stages) + 6) + "|"]
    for r in results:
        t = r["timings"]
        lines.append(f"| {r['catalog']:,} | " + " | ".join(f"{t.get(s, 0):.0f} s" for s in stages)
                     + f" | {r['wall_s']:.0f} s | {r['peak_rss_mib']:,} MiB | "
                     f"{r['peak_anon_mib']:,} MiB | {r['peak_file_mib']:,} MiB | "
                     f"{r['disk_mib']:,} MiB |")
    lines += ["", "| catalog | variant | index | top-1 agreement (95%) | recall@10 |",
              "|---|---|---|---|---|"]
    for r in results:
        for slug, v in r["variants"].items():
            low, high = v["top1_agreement_95"]
            setting = f"nprobe {v['nprobe']}" if v.get("nprobe") else \
                f"search_k {v['search_k']}" if v.get("search_k") else "exact"
            lines.append(f"| {r['catalog']:,} | `{slug}` | {v['index']} ({setting}) | "
                         f"{v['top1_agreement']:.3f} ({low:.3f}-{high:.3f}) | "
                         f"{v['recall_at_10']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
