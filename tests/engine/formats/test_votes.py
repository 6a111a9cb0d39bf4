"""The vote export's reader: the try-it-out columns (source, rank, nope_reason), older
files without them, and clear refusals."""

import json

import pytest

from engine.formats.votes import COLUMNS, VoteFileError, read_votes
from engine.retrain.challenger import usable_votes

HEADER = {"format_version": 1, "kind": "dope-or-nope-votes", "exported_at": "2026-12-05T00:00:00",
          "builds": ["b"]}
BASE = {"vote_id": 1, "query_id": "q1", "match_id": "m1", "variant": "v", "verdict": "nope",
        "created_at": "2026-12-05T00:00:00+00:00", "decision_ms": 900, "voter": "abc",
        "build_id": "b"}


def write(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in (HEADER, *rows)))
    return path


def test_photo_votes_are_read_with_their_rank_and_reason_and_set_aside(tmp_path):
    photo = {**BASE, "vote_id": 2, "query_id": "photo:f00", "source": "photo", "rank": 2,
             "nope_reason": "colour"}
    votes = read_votes(write(tmp_path / "v.jsonl", BASE, photo)).votes
    assert (votes[0].source, votes[0].rank, votes[0].nope_reason) == ("catalog", None, None)
    assert (votes[1].source, votes[1].rank, votes[1].nope_reason) == ("photo", 2, "colour")
    usable, counts = usable_votes(votes, {"q1": 0, "m1": 1})
    assert usable == [votes[0]] and counts["photo_votes"] == 1


@pytest.mark.parametrize("extra, words", [
    ({"source": "instagram"}, "source must be one of"),
    ({"nope_reason": "smell"}, "nope_reason goes with a nope"),
    ({"verdict": "dope", "nope_reason": "colour"}, "nope_reason goes with a nope"),
    ({"rank": 0}, "rank must be at least 1"),
])
def test_bad_photo_columns_are_refused_with_the_line(tmp_path, extra, words):
    with pytest.raises(VoteFileError, match=words):
        read_votes(write(tmp_path / "v.jsonl", {**BASE, **extra}))


def test_an_older_csv_without_the_photo_columns_is_read(tmp_path):
    path = tmp_path / "v.csv"
    names = COLUMNS + ["reason", "probability"]
    row = {**BASE, "reason": "uniform", "probability": 0.01}
    path.write_text(",".join(names) + "\n" + ",".join(str(row[c]) for c in names) + "\n")
    (vote,) = read_votes(path).votes
    assert vote.reason == "uniform" and vote.source == "catalog"
