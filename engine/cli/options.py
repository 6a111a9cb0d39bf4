"""The engine CLI's shared options and the checks behind them (engine.cli.main uses them).

Every check raises ValueError; `checked` turns it into click's usage error for the
option, so a bad value is named before any work starts.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import click

from engine.builder.catalog import SOURCES
from engine.builder.variants import BUILTIN_SETS
from engine.formats.shards import SHARD_ROWS
from engine.formats.state import FASHION_TRAIN_ROWS
from engine.nets import DEFAULT_FASHION_INPUT, FASHION_INPUTS

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


def checked(check):
    """Return a click callback that passes an option's value through `check` and reports
    its ValueError as that option's error (None, an option not given, passes as is)."""
    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


def _device(value: str) -> str:
    if not DEVICE_RE.fullmatch(value):
        raise ValueError(f"{value!r}; accepted: auto, cpu, cuda, cuda:N")
    from engine.nets.features import resolve_device

    resolve_device(value)
    return value


_check_device = checked(_device)


def vote_file(value: Path) -> Path:
    """Check a vote file's name: .jsonl or .csv."""
    from engine.formats.votes import check_suffix

    check_suffix(value)
    return value


def _check_limit(ctx, param, value: int | None) -> int | None:
    return None if value == 0 else value


# What goes into a build (build and extract), in --help order.
CATALOG_OPTIONS = (
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
    click.option("--repeat", type=click.IntRange(1, 1000), default=1, show_default=True,
                 help="Synthetic growth: K copies of each catalog item (the item, then "
                      "mirrored and shifted copies with new ids), to measure catalogs "
                      "bigger than the source."),
    click.option("--variants", default="auto", show_default=True,
                 callback=_check_variants,
                 help="auto, classic, offline or FILE.toml."),
    click.option("--image-size", type=click.IntRange(32, 1024), default=64,
                 show_default=True, help="Network input size in pixels (224 = reference)."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Seed for sampling, training, Annoy and the control."),
    click.option("--allow-download", is_flag=True,
                 help="Let auto/classic download torchvision's VGG16 weights."),
    click.option("--index", type=click.Choice(("auto", "annoy", "faiss")), default="auto",
                 show_default=True,
                 help="Each variant's index: Annoy, faiss (IVF on disk; exact binary for "
                      "hamming), or auto: Annoy up to 50,000 catalog items, faiss past it."),
    click.option("--trees", type=click.IntRange(1, 1000), default=10, show_default=True,
                 help="Annoy trees per index."),
    click.option("--search-k", type=click.IntRange(min=1), default=None,
                 help="Annoy search_k (default: max(10*k*trees, catalog size); doubled "
                      "automatically until top-1 agreement with exact search is >= 0.99)."),
    click.option("--ranks", type=click.IntRange(1, 20), default=1, show_default=True,
                 help="Matches per query and variant written to pairs.jsonl."),
    click.option("--shard-rows", type=click.IntRange(64, 1_000_000), default=SHARD_ROWS,
                 show_default=True, help="Rows per feature part (features/<key>/part-N.npy)."),
    click.option("--train-rows", type=click.IntRange(100, 10_000_000),
                 default=FASHION_TRAIN_ROWS, show_default=True,
                 help="vgg16-fashion trains on at most N catalog rows (a seeded sample)."),
    click.option("--fashion-input", type=click.Choice(FASHION_INPUTS),
                 default=DEFAULT_FASHION_INPUT, show_default=True,
                 help="The conv map vgg16-fashion's new fc6 reads: pool4 (better on small "
                      "grayscale garments, docs/benchmarks.md) or pool5 (the article's)."),
)


def catalog_options(f):
    """Options that choose what goes into a build (build and extract)."""
    for option in reversed(CATALOG_OPTIONS):
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
        click.option("--executor", type=click.Choice(("plain", "ray")), default="plain",
                     show_default=True,
                     help="Where extraction and IVF list assignment run: here, or on a Ray "
                          "actor pool (RAY_ADDRESS, or a local cluster; pip install -e '.[ray]')."),
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


def build_options(kwargs: dict):
    """Return the BuildOptions that catalog_options' values ask for."""
    from engine.formats.state import BuildOptions

    path = kwargs.pop("catalog_path", None)
    return BuildOptions(catalog_path=str(path) if path else None, **kwargs)


BUILD_DIR = click.option("--build", "build_dir", type=click.Path(path_type=Path),
                         required=True, help="Build directory the stage reads and writes.")
DEVICE = click.option("--device", default=None, callback=_check_device,
                      help="auto, cpu, cuda or cuda:N (default: the build's).")
