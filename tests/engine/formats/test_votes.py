"""The vote export's reader: the try-it-out columns (source, rank, nope_reason), older
files without them, and clear refusals."""

import base64
import json

import numpy as np
import pytest

from engine.formats.votes import COLUMNS, VoteFileError, read_votes, write_votes
from engine.retrain.challenger import usable_votes

HEADER = {"format_version": 2, "kind": "dope-or-nope-votes", "exported_at": "2026-12-05T00:00:00",
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
    # without the photo's features (no photo record) the photo vote is set aside
    assert usable == [votes[0]] and counts["photo_votes_set_aside"] == 1
    usable, counts = usable_votes(votes, {"q1": 0, "m1": 1}, photos={"photo:f00"})
    assert usable == votes and counts["photo_votes"] == 1


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


def photo_record(**changes):
    row = base64.b64encode(np.array([0.25, -1.5], "<f2").tobytes()).decode()
    return {"record": "photo", "query_id": "photo:f00", "build_id": "b",
            "features": {"n.l": row, "whitebox.lbp": row}} | changes


def test_photo_records_are_read_with_their_features(tmp_path):
    photo = {**BASE, "vote_id": 2, "query_id": "photo:f00", "source": "photo", "rank": 1}
    found = read_votes(write(tmp_path / "v.jsonl", photo_record(), BASE, photo))
    assert len(found.votes) == 2 and set(found.photos) == {"photo:f00"}
    record = found.photos["photo:f00"]
    assert record.build_id == "b" and record.features["n.l"].tolist() == [0.25, -1.5]
    write_votes(tmp_path / "again.jsonl", found.header, found.votes, list(found.photos.values()))
    again = read_votes(tmp_path / "again.jsonl")
    assert again.votes == found.votes
    assert again.photos["photo:f00"].features["whitebox.lbp"].tolist() == [0.25, -1.5]
    with pytest.raises(VoteFileError, match="photo records go in a .jsonl"):
        write_votes(tmp_path / "v.csv", found.header, found.votes, list(found.photos.values()))


@pytest.mark.parametrize("record, words", [
    (photo_record(features={"n.l": "%%%"}), "is not base64"),
    (photo_record(features={"n.l": base64.b64encode(b"abc").decode()}), "not a float16 row"),
    (photo_record(features={"n.l": base64.b64encode(
        np.array([np.inf], "<f2").tobytes()).decode()}), "not finite"),
    (photo_record(features=[1, 2]), "features must be an object"),
    (photo_record(query_id="f00"), "starts with 'photo:'"),
    (photo_record(build_id=""), "build_id must be a non-empty string"),
    (photo_record(record="video"), "record 'video' is not known"),
])
def test_bad_photo_records_are_refused_with_the_line(tmp_path, record, words):
    with pytest.raises(VoteFileError, match=f"line 2: .*{words}"):
        read_votes(write(tmp_path / "v.jsonl", record))


def test_a_photo_record_comes_once_and_only_from_format_2(tmp_path):
    with pytest.raises(VoteFileError, match="line 3: photo photo:f00 comes twice"):
        read_votes(write(tmp_path / "v.jsonl", photo_record(), photo_record()))
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(HEADER | {"format_version": 1}) + "\n"
                    + json.dumps(photo_record()) + "\n")
    with pytest.raises(VoteFileError, match="format 2 adds"):
        read_votes(path)
