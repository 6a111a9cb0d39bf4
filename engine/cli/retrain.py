"""`python -m engine retrain`: a challenger variant learned from exported votes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.options import checked, usage_errors, vote_file


def echo_photo_gate(p: dict) -> None:
    if p.get("learned") is False:
        click.echo(f"Photos ({p['held_out_votes']} votes on {p['held_out_queries']} photos, "
                   f"never trained on): AUC challenger {p['challenger_auc']:.4f} vs parent "
                   f"{p['parent_auc']:.4f}; photos are ranked by the challenger's weights "
                   "(--photo-votes learn to learn photo weights)")
        return
    if "skipped" in p:
        click.echo(f"Photos: no photo weights ({p['skipped']}); photos are ranked by the "
                   "challenger's weights")
        return
    ranked_by = "the photo weights" if p["used"] else "the challenger's weights"
    click.echo(f"Photos ({p['held_out_votes']} held-out votes on {p['held_out_queries']} "
               f"photos): AUC photo weights {p['challenger_auc']:.4f} vs the challenger's "
               f"{p['catalog_weights_auc']:.4f} (parent {p['parent_auc']:.4f}), gain "
               f"{p['gain']:+.4f}, 95% lower bound {p['gain_low_95']:+.4f}: photos are "
               f"ranked by {ranked_by}")


@click.command()
@click.option("--build", "build_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), required=True,
              help="The build the votes were cast on (or a later round's).")
@click.option("--votes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, callback=checked(vote_file),
              help="Vote export (.jsonl or .csv): flask export-votes or crowd votes.")
@click.option("--parent", default="auto", show_default=True,
              help="The variant to improve on (a slug), or auto: the highest Wilson lower "
                   "bound in the votes.")
@click.option("--queries", type=click.IntRange(10, 100_000), default=500, show_default=True,
              help="Size of the fresh query pool every variant gets pairs on.")
@click.option("--photo-votes", type=click.Choice(["report", "learn", "ignore"]),
              default="report", show_default=True,
              help="Votes on photos tried on the try-it-out page (a .jsonl export carries "
                   "their features): report how challenger and parent rank them, learn "
                   "photo weights from them too (gated; docs/retrain.md), or leave them out.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The challenger's build directory (written atomically, only if it passes).")
@usage_errors
def retrain(build_dir: Path, votes: Path, parent: str, queries: int, photo_votes: str,
            seed: int, out: Path) -> None:
    """Learn a challenger from votes; write its build only if it beats its parent."""
    from engine.retrain.challenger import GATE_FAILED
    from engine.retrain.challenger import retrain as run_retrain

    result = run_retrain(build_dir, votes, out, parent=parent, queries=queries, seed=seed,
                         photo_votes=photo_votes)
    c, g = result.counts, result.gate
    click.echo(f"Votes: {c['total']} in the file, {c['usable']} usable "
               f"({c.get('photo_votes', 0)} of them on tried photos), "
               f"{c.get('skips', 0)} skips, {c.get('unknown_images', 0)} with images this build "
               "does not have")
    if c.get("photo_votes_set_aside"):
        why = ", ".join(f"{n} {w.replace('_', ' ')}" for w, n in c["photos_set_aside"].items())
        click.echo(f"Photo votes set aside: {c['photo_votes_set_aside']} (photos: {why})")
    click.echo(f"Parent: {result.parent} ({result.parent_reason})")
    click.echo(f"Gate ({g['held_out_votes']} held-out votes on {g['held_out_queries']} queries): "
               f"AUC challenger {g['challenger_auc']:.4f} vs parent {g['parent_auc']:.4f}, "
               f"gain {g['gain']:+.4f}, 95% lower bound {g['gain_low_95']:+.4f}")
    if result.photo:
        echo_photo_gate(result.photo)
    if not result.published:
        click.echo("The challenger is no better than its parent on held-out votes: "
                   f"no build written (exit {GATE_FAILED}).")
        sys.exit(GATE_FAILED)
    shares = ", ".join(f"{f} {s:.0%}" for f, s in sorted(result.learned["shares"].items(),
                                                         key=lambda kv: -kv[1]) if s >= 0.01)
    click.echo(f"Learned: {shares}")
    click.echo(f"Challenger {result.slug}: {result.name}")
    click.echo(f"Build {result.manifest['build_id']} written to {out}; import it with "
               f"`flask --app webapp import-build {out}`")
