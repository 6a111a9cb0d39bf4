"""Flask CLI commands: import-build, export-votes, recount-votes and fit."""

from __future__ import annotations

import time

import click
from flask import current_app
from flask.cli import with_appcontext

from webapp.jobs.builds import BuildError, import_build
from webapp.jobs.export import csv_lines, jsonl_lines
from webapp.jobs.fit import run_fit
from webapp.jobs.fit_store import StoredFit
from webapp.jobs.recount import recount_votes


@click.command("import-build")
@click.argument("directory", type=click.Path(file_okay=False))
@with_appcontext
def import_build_command(directory: str) -> None:
    """Import an engine build directory (all-or-nothing, idempotent)."""
    try:
        report = import_build(directory, current_app.config["DOPE_IMAGE_DIR"])
    except BuildError as exc:
        for error in exc.errors:
            click.echo(f"error: {error}", err=True)
        raise click.ClickException(f"{directory} was not imported; nothing changed.") from exc
    click.echo(f"Imported build {report['build_id']}: {report['variants']} variants, "
               f"{report['pairs_added']} new pairs of {report['pairs_in_build']}.")
    if report["pairs_added"]:
        run_fit()  # new pairs change the design, so every estimate


def describe_fit(row) -> str:
    body = StoredFit.of_row(row).body
    corrected = body["corrected"]
    state = "settled" if corrected["settled"] else "not settled"
    return (f"Fit {row.id}: {corrected['judgments']} judgments "
            f"({body['voters']['excluded']} of {body['voters']['voters']} voters excluded), "
            f"leader {corrected['leader']}, {state}, in {body['seconds']} s.")


@click.command("fit")
@click.option("--every", type=click.FloatRange(min=0), default=0.0,
              help="Fit again every this many seconds, until interrupted (0: once).")
@with_appcontext
def fit_command(every: float) -> None:
    """Fit the voter model and the corrected leaderboard from the votes now stored."""
    while True:
        click.echo(describe_fit(run_fit()))
        if not every:
            return
        time.sleep(every)


@click.command("export-votes")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def export_votes_command(file: str) -> None:
    """Write every vote to FILE (.jsonl or .csv) for retraining."""
    if file.endswith(".jsonl"):
        lines = jsonl_lines()
    elif file.endswith(".csv"):
        lines = csv_lines()
    else:
        raise click.UsageError("FILE must end in .jsonl or .csv")
    with open(file, "w", encoding="utf-8", newline="") as f:
        f.writelines(lines)
    click.echo(f"Wrote {file}.")


@click.command("recount-votes")
@with_appcontext
def recount_votes_command() -> None:
    """Rebuild the per-variant vote counters from the votes table."""
    changed = recount_votes()
    click.echo(f"Recounted votes; {changed} variant(s) had drifted counters.")


def init_app(app) -> None:
    """Register the CLI commands on the app."""
    app.cli.add_command(import_build_command)
    app.cli.add_command(export_votes_command)
    app.cli.add_command(recount_votes_command)
    app.cli.add_command(fit_command)
