"""A build that stopped: `<out>.partial`, and when running the same build again resumes it.

`engine build` works in `<out>.partial` and renames it to `<out>` at the end. A build
that stops keeps that directory (with its finished feature parts, builder.extract);
the same command with the same options resumes it, other options are refused (or, with
--force, discard it). Runtime options (device, workers, batch size, executor) may
differ.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from engine.formats.state import BuildOptions, load_state

logger = logging.getLogger(__name__)


def partial_dir(out: Path) -> Path:
    return out.parent / f"{out.name}.partial"


# Options that change how a build runs, not what it makes: a resumed build may differ.
RUNTIME_OPTIONS = ("device", "workers", "batch_size", "executor")


def same_options(theirs: dict, opts: BuildOptions) -> bool:
    return all(theirs.get(k) == v for k, v in asdict(opts).items() if k not in RUNTIME_OPTIONS)


def check_resumable(partial: Path, opts: BuildOptions, *, force: bool) -> None:
    """Resume a stopped build with the same options; refuse (or, with force, remove) one
    with other options."""
    if not partial.exists():
        return
    try:
        same = same_options(load_state(partial).options, opts)
    except (ValueError, OSError):
        same = False
    if same:
        logger.info("Resuming the stopped build in %s (finished feature parts are kept)",
                    partial)
    elif force:
        shutil.rmtree(partial)
    else:
        raise ValueError(f"{partial} holds a stopped build with other options; run the "
                         "same command as before to resume it, or pass --force to discard it")
