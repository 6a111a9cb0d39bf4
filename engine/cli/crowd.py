"""`python -m engine crowd ...`: the simulated crowd's commands (docs/crowd.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from engine.cli.options import checked, usage_errors, vote_file

DEFAULT_PLAY_TASTE = "look"


def _taste(value: str) -> str:
    from engine.crowd.taste import load_taste

    load_taste(value)
    return value


def _mix(value: str) -> dict:
    from engine.crowd.simulate import parse_mix

    return parse_mix(value)


def _new_vote_file(value: Path) -> Path:
    if not value.parent.is_dir():
        raise ValueError(f"directory not found: {value.parent}")
    return vote_file(value)


_check_taste, _check_mix, _check_vote_file = checked(_taste), checked(_mix), checked(_new_vote_file)


BUILD = click.option("--build", "build_dir", type=click.Path(exists=True, file_okay=False,
                                                             path_type=Path),
                     required=True, help="Build directory (docs/build-format.md).")
MIX = click.option("--mix", callback=_check_mix, default=None,
                   help="Voter types and their shares, e.g. honest=0.8,yes=0.1,random=0.1 "
                        "(default: the taste file's, else all honest).")
SEED = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)


def taste_option(required: bool = True, default: str | None = None):
    return click.option("--taste", required=required and default is None, default=default,
                        callback=_check_taste, show_default=default is not None,
                        help="A preset (category, tone, pattern, look) or FILE.toml.")


def _judged(build_dir: Path, taste_name: str, mix: dict | None):
    from engine.crowd.simulate import Population, judge_build
    from engine.crowd.taste import load_taste
    from engine.formats.builddir import read_build

    taste = load_taste(taste_name)
    population = Population.from_taste(taste, mix)
    return judge_build(read_build(build_dir), taste, population), taste, population


@click.group()
def crowd() -> None:
    """Simulated voters with a known taste: truths, vote files, live play, campaign plans."""


@crowd.command()
@BUILD
@taste_option()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures as JSON.")
@usage_errors
def truth(build_dir: Path, taste: str, out: Path | None) -> None:
    """Print each variant's true expected approval under a taste, and the ranking's gaps."""
    from engine.crowd.simulate import truth_report

    judged, taste_obj, population = _judged(build_dir, taste, None)
    report = truth_report(judged, taste_obj, population)
    click.echo(f"Taste {report['taste']} on build {report['build_id']}")
    click.echo(report["truth_is"])
    click.echo("| rank | variant | true approval | pairs |\n|---:|---|---:|---:|")
    for row in report["variants"]:
        rank = row["rank"] if row["rank"] else "control"
        click.echo(f"| {rank} | {row['slug']} | {row['true_approval']:.4f} | {row['pairs']} |")
    click.echo("Gaps between neighbours in the true ranking:")
    for gap in report["gaps"]:
        click.echo(f"  {gap['between'][0]} - {gap['between'][1]}: {100 * gap['gap']:+.2f} points")
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"Wrote {out}")


@crowd.command()
@BUILD
@taste_option()
@click.option("--votes", "n_votes", type=click.IntRange(1, 10_000_000), required=True)
@MIX
@SEED
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              callback=_check_vote_file, help="Vote file to write: .jsonl or .csv.")
@usage_errors
def votes(build_dir: Path, taste: str, n_votes: int, mix: dict | None, seed: int,
          out: Path) -> None:
    """Write N simulated votes in the vote export format, as the game would collect them."""
    from engine.crowd.campaign import campaign, export_votes
    from engine.formats.votes import write_votes

    judged, taste_obj, population = _judged(build_dir, taste, mix)
    cast = list(campaign(judged, population, n_votes, seed))
    header, rows = export_votes(judged, cast, taste=taste_obj, population=population, seed=seed)
    write_votes(out, header, rows)
    short = f" (every voter ran out of pairs after {len(rows)})" if len(rows) < n_votes else ""
    click.echo(f"Wrote {len(rows)} votes{short} to {out}")


@crowd.command()
@BUILD
@click.option("--url", required=True, help="The running server, e.g. http://127.0.0.1:8000.")
@taste_option(default=DEFAULT_PLAY_TASTE)
@click.option("--votes", "n_votes", type=click.IntRange(1, 1_000_000), required=True)
@click.option("--voters", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Simulated people playing at once.")
@MIX
@SEED
@click.option("--fast", is_flag=True, help="No human decision times (still sent as such).")
@click.option("--max-seconds", type=click.FloatRange(1, 86_400), default=600,
              show_default=True, help="Stop after this long, whatever is left.")
@click.option("--forwarded-for", is_flag=True,
              help="Send each simulated person's own X-Forwarded-For address (for a server "
                   "told to trust one proxy).")
@usage_errors
def play(build_dir: Path, url: str, taste: str, n_votes: int, voters: int, mix: dict | None,
         seed: int, fast: bool, max_seconds: float, forwarded_for: bool) -> None:
    """Play a running server over HTTP as browsers do, then compare its leaderboard."""
    from engine.crowd.play import Player, PlayError

    judged, _, population = _judged(build_dir, taste, mix)
    player = Player(judged, population, url, votes=n_votes, voters=voters, seed=seed,
                    fast=fast, max_seconds=max_seconds, forwarded_for=forwarded_for)
    try:
        result = player.play()
    except PlayError as exc:
        raise click.ClickException(str(exc)) from None
    echo_play(judged, result)


def echo_play(judged, result) -> None:
    """Print votes cast, statuses seen and truth beside the server's leaderboard."""
    statuses = ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(result.statuses.items()))
    click.echo(f"Votes cast: {result.votes_cast} in {result.elapsed_s:.1f} s "
               f"({result.votes_per_s:.1f} votes/s), stopped by {result.stopped}; "
               f"{result.voters} people, {result.identities} cookies")
    click.echo(f"Statuses seen: {statuses}")
    if result.unknown_images:
        click.echo(f"Pairs with images not in this build (skipped): {result.unknown_images}")
    rows = {r["slug"]: r for r in result.leaderboard.get("variants", [])}
    click.echo("| variant | true approval | server approval | votes | 95% interval |")
    click.echo("|---|---:|---:|---:|---|")
    for slug in sorted(judged.slugs, key=lambda s: -judged.truth[s]):
        r = rows.get(slug, {})
        rate = f"{r['rate']:.3f}" if r.get("rate") is not None else "-"
        ci = f"{r['ci_low']:.3f}-{r['ci_high']:.3f}" if "ci_low" in r else "-"
        click.echo(f"| {slug} | {judged.truth[slug]:.3f} | {rate} | {r.get('votes', 0)} | {ci} |")


@crowd.command()
@BUILD
@taste_option()
@MIX
@click.option("--campaigns", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--max-votes", type=click.IntRange(10, 1_000_000), default=20_000,
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="First campaign's seed (campaign i uses seed + i).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the figures as JSON.")
@usage_errors
def plan(build_dir: Path, taste: str, mix: dict | None, campaigns: int, max_votes: int,
         seed: int, out: Path | None) -> None:
    """How many votes until a Wilson interval separates the true best from the second?"""
    from engine.crowd.plan import plan_campaign

    judged, taste_obj, population = _judged(build_dir, taste, mix)
    result = plan_campaign(judged, population, campaigns=campaigns, max_votes=max_votes,
                           first_seed=seed)
    done = [v for v in result.separated_at if v is not None]
    median = result.median
    click.echo(f"Taste {taste_obj.name}: true best {result.best}, second {result.second} "
               f"({100 * result.gap:.2f} points apart)")
    click.echo(f"Separated in {len(done)} of {campaigns} campaigns within {max_votes:,} votes; "
               "median " + (f"{median:,} votes" if median is not None
                            else f"not within {max_votes:,}"))
    if out:
        out.write_text(json.dumps({"taste": taste_obj.name, **result.to_dict(),
                                   "truth": judged.truth}, indent=2) + "\n")
