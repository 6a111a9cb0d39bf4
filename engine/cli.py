"""Command line: `python -m engine build ...` and one command per stage."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import click

from engine.catalog import SOURCES
from engine.variants import BUILTIN_SETS, DEFAULT_FASHION_INPUT, FASHION_INPUTS

DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_variants(ctx, param, value: str) -> str:
    if value == "auto" or value in BUILTIN_SETS:
        return value
    if value.endswith(".toml"):
        if not Path(value).is_file():
            raise click.BadParameter(f"file not found: {value}")
        return value
    raise click.BadParameter(f"{value!r}; accepted: auto, {', '.join(BUILTIN_SETS)} "
                             "or a path to a .toml variant set")


def _check_device(ctx, param, value: str | None) -> str | None:
    if value is None:
        return value
    if not DEVICE_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r}; accepted: auto, cpu, cuda, cuda:N")
    from engine.features import resolve_device

    try:
        resolve_device(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_limit(ctx, param, value: int | None) -> int | None:
    return None if value == 0 else value


def catalog_options(f):
    """Options that choose what goes into a build (build and extract)."""
    options = [
        click.option("--catalog", type=click.Choice(SOURCES), default="fashion-mnist",
                     show_default=True, help="Catalog source."),
        click.option("--catalog-path", type=click.Path(exists=True, file_okay=False,
                                                       path_type=Path),
                     help="Source directory (default for fashion-mnist: "
                          "/usr/share/datasets/fashion-mnist)."),
        click.option("--limit", type=click.IntRange(min=0), default=6000, show_default=True,
                     callback=_check_limit,
                     help="Seeded, category-stratified sample of N catalog items (0 = all)."),
        click.option("--queries", type=click.IntRange(min=0), default=500, show_default=True,
                     callback=_check_limit, help="Seeded sample of Q queries (0 = all)."),
        click.option("--variants", default="auto", show_default=True,
                     callback=_check_variants,
                     help="auto, classic, offline or FILE.toml."),
        click.option("--image-size", type=click.IntRange(32, 1024), default=64,
                     show_default=True, help="Network input size in pixels (224 = reference)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed for sampling, training, Annoy and the control."),
        click.option("--allow-download", is_flag=True,
                     help="Let auto/classic download torchvision's VGG16 weights."),
        click.option("--trees", type=click.IntRange(1, 1000), default=10, show_default=True,
                     help="Annoy trees per index."),
        click.option("--search-k", type=click.IntRange(min=1), default=None,
                     help="Annoy search_k (default: max(10*k*trees, catalog size); doubled "
                          "automatically until top-1 agreement with exact search is >= 0.99)."),
        click.option("--ranks", type=click.IntRange(1, 20), default=1, show_default=True,
                     help="Matches per query and variant written to pairs.jsonl."),
        click.option("--fashion-input", type=click.Choice(FASHION_INPUTS),
                     default=DEFAULT_FASHION_INPUT, show_default=True,
                     help="The conv map vgg16-fashion's new fc6 reads: pool4 (better on small "
                          "grayscale garments, docs/benchmarks.md) or pool5 (the article's)."),
    ]
    for option in reversed(options):
        f = option(f)
    return runtime_options(f)


def runtime_options(f):
    """Options that change how a stage runs, not what it builds."""
    options = [
        click.option("--device", default="auto", show_default=True, callback=_check_device,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--batch-size", type=click.IntRange(1, 4096), default=64,
                     show_default=True),
        click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
                     help="DataLoader worker processes."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def usage_errors(f):
    """Turn the engine's ValueErrors into click usage errors naming the problem."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    return wrapper


def _options(kwargs: dict):
    from engine.build import BuildOptions

    path = kwargs.pop("catalog_path", None)
    return BuildOptions(catalog_path=str(path) if path else None, **kwargs)


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
    from engine.build import build as run_build

    manifest = run_build(out, _options(kwargs), force=force, tsne=not no_tsne)
    click.echo(f"Build {manifest['build_id']} written to {out}")
    click.echo((out / "eval.md").read_text().split("## Details")[0].rstrip())


BUILD_DIR = click.option("--build", "build_dir", type=click.Path(path_type=Path),
                         required=True, help="Build directory the stage reads and writes.")


@main.command()
@catalog_options
@BUILD_DIR
@usage_errors
def extract(build_dir: Path, **kwargs) -> None:
    """Start a build directory: load the catalog, extract pretrained features."""
    from engine.build import run_stage

    state = run_stage("extract", build_dir, _options(kwargs))
    click.echo(f"Extracted features into {build_dir}/features "
               f"(variant set {state.variant_set['name']}); next: train")


DEVICE = click.option("--device", default=None, callback=_check_device,
                      help="auto, cpu, cuda or cuda:N (default: the build's).")


def _stage_command(stage: str, help_text: str, next_step: str, *, runtime: bool):
    def command(build_dir: Path, **kwargs) -> None:
        from engine.build import run_stage

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


# Last, so that engine.crowdcli finds usage_errors defined when it imports this module.
from engine.crowdcli import crowd  # noqa: E402
from engine.retraincli import retrain  # noqa: E402

main.add_command(crowd)
main.add_command(retrain)
