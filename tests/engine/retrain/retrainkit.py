"""What the retraining tests share besides fixtures: tastes, simulated votes, the CLI."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from engine.cli.main import main
from engine.crowd.campaign import campaign, export_votes
from engine.crowd.simulate import Population, judge_build
from engine.crowd.taste import load_taste
from engine.formats.builddir import read_build
from engine.formats.votes import write_votes

TONE = "name = 'dark'\n[taste]\nbias = -6.0\ncategory = 1.0\ntone = 9.0\n"
FLAT = "name = 'flat'\n[taste]\nbias = 0.0\n"


def simulate(build: Path, taste_text: str, n: int, path: Path, seed: int = 0) -> Path:
    taste_file = path.with_suffix(".toml")
    taste_file.write_text(taste_text)
    taste = load_taste(str(taste_file))
    population = Population.from_taste(taste)
    judged = judge_build(read_build(build), taste, population)
    votes = list(campaign(judged, population, n, seed))
    write_votes(path, *export_votes(judged, votes, taste=taste, population=population,
                                    seed=seed))
    return path


def run_retrain(build, votes, out, *extra):
    return CliRunner().invoke(main, ["retrain", "--build", str(build), "--votes", str(votes),
                                     "--queries", "30", "--seed", "1", "--out", str(out),
                                     *extra])
