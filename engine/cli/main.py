"""Command line: `python -m engine build ...` and one command per stage."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from engine.builder.extract import WorkerShare
from engine.cli.crowd import crowd
from engine.cli.options import (
    BUILD_DIR,
    DEVICE,
    build_options,
    catalog_options,
    checked,
    runtime_options,
    usage_errors,
)
from engine.cli.retrain import retrain
from engine.cli.serve import serve


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings only.")
def main(verbose: int, quiet: bool) -> None:
    """Dope or Nope's offline engine: catalog -> features -> indexes -> pairs -> evaluation."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@catalog_options
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Build directory to write (written atomically).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--no-tsne", is_flag=True, help="Skip the t-SNE maps.")
@usage_errors
def build(out: Path, force: bool, no_tsne: bool, **kwargs) -> None:
    """Run every stage and write a complete build directory."""
    from engine.builder.pipeline import build as run_build

    manifest = run_build(out, build_options(kwargs), force=force, tsne=not no_tsne)
    click.echo(f"Build {manifest['build_id']} written to {out}")
    click.echo((out / "eval.md").read_text().split("## Details")[0].rstrip())


@main.command()
@catalog_options
@BUILD_DIR
@click.option("--shard", "share", default="0/1", show_default=True,
              callback=checked(WorkerShare.parse),
              help="Make worker i's share of N (parts p with p % N == i), for any scheduler; "
                   "run it again without --shard (or with every i) to finish.")
@usage_errors
def extract(build_dir: Path, share: WorkerShare, **kwargs) -> None:
    """Start (or go on with) a build directory: load the catalog, extract pretrained
    features into shards; finished parts are kept."""
    from engine.builder.pipeline import run_stage

    state = run_stage("extract", build_dir, build_options(kwargs), share=share)
    finished = all(n.get("finished", True) for n in state.reports["features"]["networks"].values())
    click.echo(f"Extracted features into {build_dir}/features "
               f"(variant set {state.variant_set['name']}); " +
               ("next: train" if finished else "other workers' parts are still missing"))


def _stage_command(stage: str, help_text: str, next_step: str, *, runtime: bool):
    def command(build_dir: Path, **kwargs) -> None:
        from engine.builder.pipeline import run_stage

        run_stage(stage, build_dir, **kwargs)
        click.echo(f"{stage} done in {build_dir}" + (f"; next: {next_step}" if next_step else ""))

    command.__doc__ = help_text
    command = usage_errors(command)
    command = BUILD_DIR(command)
    if runtime:
        command = runtime_options(command)
    if stage in ("index", "pairs"):
        command = click.option("--trees" if stage == "index" else "--search-k",
                               type=click.IntRange(min=1), default=None,
                               help="Override the build's Annoy setting.")(command)
    if stage == "pairs":
        command = DEVICE(command)
    return main.command(name=stage)(command)


_stage_command("train", "Train vgg16-fashion on the catalog; save its features.", "index",
               runtime=True)
_stage_command("index", "Build one seeded Annoy index per variant.", "pairs", runtime=False)
_stage_command("pairs", "Pick each query's matches, check Annoy against exact search.",
               "evaluate", runtime=False)
_stage_command("evaluate", "Evaluate every variant; write eval.json, eval.md, tsne/.", "",
               runtime=False)


main.add_command(crowd)
main.add_command(retrain)
main.add_command(serve)
