"""The vote export (docs/build-format.md, "Vote export"): one reader and one writer.

Every engine caller reads votes through `read_votes` (retraining, the tests),
whether the file came from the simulated crowd or `flask --app webapp export-votes`.
JSON Lines when the name ends in `.jsonl` (a header object, then one object per
vote, and from format 2 a photo record per tried photo: its features), CSV when it
ends in `.csv` (the vote columns under one row of names; no photo records). A bad
file is refused with the line that is wrong; nothing is guessed.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 2 added photo records; a format 1 file is a format 2 without them
PHOTO_RECORD = "photo"  # a JSONL line {"record": "photo", "query_id", "build_id", "features"}
PHOTO_QUERY = "photo:"
KIND = "dope-or-nope-votes"
COLUMNS = ["vote_id", "query_id", "match_id", "variant", "verdict", "created_at",
           "decision_ms", "voter", "build_id"]
# Added within format 1: why the game served the pair and the probability the
# allocation gave its image pair (docs/statistics.md). Empty for older votes.
# Then the try-it-out page's: `source` "catalog" (the game) or "photo" (a visitor's
# photo, query id photo:<handle>), the match's `rank` and a nope's `nope_reason`.
OPTIONAL_COLUMNS = ["reason", "probability", "source", "rank", "nope_reason"]
REASONS = ("uniform", "adaptive", "control", "gold")
SOURCES = ("catalog", "photo")
NOPE_REASONS = ("colour", "pattern", "shape", "type")
VERDICTS = ("dope", "nope", "skip")
SUFFIXES = (".jsonl", ".csv")
MAX_ERRORS = 5


class VoteFileError(ValueError):
    """A vote file that is not a valid export; the message names what is wrong."""


@dataclass(frozen=True)
class Vote:
    """One exported vote."""

    vote_id: int
    query_id: str
    match_id: str
    variant: str
    verdict: str
    created_at: str
    decision_ms: int | None
    voter: str
    build_id: str
    reason: str | None = None
    probability: float | None = None
    source: str = "catalog"
    rank: int | None = None
    nope_reason: str | None = None

    @property
    def judged(self) -> bool:
        """Return True for dope and nope (a skip is not a judgment of the match)."""
        return self.verdict != "skip"

    def to_dict(self) -> dict:
        return {c: getattr(self, c) for c in COLUMNS + OPTIONAL_COLUMNS}


@dataclass(frozen=True)
class PhotoQuery:
    """A tried photo as exported: the build the query service searched and what it
    computed of the photo ({feature key or whitebox.<family>: float32 row})."""

    query_id: str
    build_id: str
    features: dict[str, np.ndarray]

    def to_dict(self) -> dict:
        return {"record": PHOTO_RECORD, "query_id": self.query_id, "build_id": self.build_id,
                "features": {k: base64.b64encode(np.ascontiguousarray(v, "<f2").tobytes())
                             .decode() for k, v in self.features.items()}}


@dataclass
class VoteFile:
    """A vote export: its header (JSONL only; {} for CSV), its votes in file order and
    its tried photos by query id (JSONL from format 2 only)."""

    header: dict = field(default_factory=dict)
    votes: list[Vote] = field(default_factory=list)
    photos: dict[str, PhotoQuery] = field(default_factory=dict)

    def judged(self) -> list[Vote]:
        return [v for v in self.votes if v.judged]


def check_suffix(path: str | Path) -> str:
    """Return the file's format ("jsonl" or "csv") from its name, or raise VoteFileError."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise VoteFileError(f"{path}: a vote file ends in .jsonl or .csv, "
                            f"not {suffix or '(none)'!r}")
    return suffix[1:]


def _int_field(value, name: str, *, optional: bool = False) -> int | None:
    if optional and (value is None or value == ""):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer")
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            raise ValueError(f"{name} must be an integer, not {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _str_field(value, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _reason_field(value) -> str | None:
    if value is None or value == "":
        return None
    if value not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(REASONS)} or empty, not {value!r}")
    return value


def _probability_field(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not 0 < number <= 1:
        raise ValueError(f"probability must be a number in (0, 1] or empty, not {value!r}")
    return number


def parse_vote(obj: dict) -> Vote:
    """Return the Vote an export object (or CSV row) describes, or raise ValueError."""
    missing = [c for c in COLUMNS if c not in obj]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    verdict = obj["verdict"]
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    created_at = _str_field(obj["created_at"], "created_at")
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise ValueError(f"created_at is not an ISO 8601 time: {created_at!r}") from None
    decision_ms = _int_field(obj["decision_ms"], "decision_ms", optional=True)
    if decision_ms is not None and decision_ms < 0:
        raise ValueError("decision_ms must not be negative")
    return Vote(vote_id=_int_field(obj["vote_id"], "vote_id"),
                query_id=_str_field(obj["query_id"], "query_id"),
                match_id=_str_field(obj["match_id"], "match_id"),
                variant=_str_field(obj["variant"], "variant"), verdict=verdict,
                created_at=created_at, decision_ms=decision_ms,
                voter=_str_field(obj["voter"], "voter"),
                build_id=_str_field(obj["build_id"], "build_id"),
                reason=_reason_field(obj.get("reason")),
                probability=_probability_field(obj.get("probability")),
                **_photo_fields(obj, verdict))


def _photo_fields(obj: dict, verdict: str) -> dict:
    """The try-it-out columns: source, rank and nope_reason (absent: a catalog vote)."""
    source = obj.get("source") or "catalog"
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    rank = _int_field(obj.get("rank"), "rank", optional=True)
    if rank is not None and rank < 1:
        raise ValueError("rank must be at least 1")
    reason = obj.get("nope_reason") or None
    if reason is not None and (reason not in NOPE_REASONS or verdict != "nope"):
        raise ValueError(f"nope_reason goes with a nope and is one of "
                         f"{', '.join(NOPE_REASONS)}, not {reason!r}")
    return {"source": source, "rank": rank, "nope_reason": reason}


def _feature_row(key, value) -> np.ndarray:
    if not isinstance(key, str) or not key or not isinstance(value, str):
        raise ValueError("features maps a feature key to a base64 float16 row")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"feature {key!r} is not base64") from None
    if not raw or len(raw) % 2:
        raise ValueError(f"feature {key!r} is not a float16 row ({len(raw)} bytes)")
    row = np.frombuffer(raw, "<f2").astype(np.float32)
    if not np.isfinite(row).all():
        raise ValueError(f"feature {key!r} holds a value that is not finite")
    return row


def parse_photo(obj: dict) -> PhotoQuery:
    """Return the PhotoQuery a photo record describes, or raise ValueError."""
    query_id = _str_field(obj.get("query_id"), "query_id")
    if not query_id.startswith(PHOTO_QUERY):
        raise ValueError(f"a photo record's query_id starts with {PHOTO_QUERY!r}")
    features = obj.get("features")
    if not isinstance(features, dict):
        raise ValueError("a photo record's features must be an object")
    return PhotoQuery(query_id, _str_field(obj.get("build_id"), "build_id"),
                      {key: _feature_row(key, value) for key, value in features.items()})


def check_header(obj, path) -> dict:
    """Return a JSONL header object, or raise VoteFileError naming what is wrong."""
    if not isinstance(obj, dict) or obj.get("kind") != KIND:
        raise VoteFileError(f"{path}: line 1 is not a Dope or Nope vote export header "
                            f"(expected an object with \"kind\": \"{KIND}\")")
    version = obj.get("format_version")
    if version not in READABLE_VERSIONS:
        raise VoteFileError(f"{path}: vote export format_version {version!r} is not known; "
                            f"this engine reads format_version "
                            f"{' and '.join(map(str, READABLE_VERSIONS))}")
    return obj


def _jsonl_records(text: str, path):
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise VoteFileError(f"{path}: empty file (a vote export starts with a header line)")
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise VoteFileError(f"{path}: line 1 is not JSON (a vote export starts with a "
                            "header object)") from None
    records = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            records.append((number, None))
            continue
        records.append((number, obj))
    return check_header(header, path), records


def _csv_records(text: str, path):
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise VoteFileError(f"{path}: empty file (a vote CSV starts with its column names)")
    # Older exports stop after some of the optional columns (reason, probability).
    known = [COLUMNS + OPTIONAL_COLUMNS[:n] for n in range(len(OPTIONAL_COLUMNS) + 1)]
    if list(reader.fieldnames) not in known:
        raise VoteFileError(f"{path}: the columns are {','.join(reader.fieldnames)}; a vote "
                            f"export has {','.join(COLUMNS)}, then optionally "
                            f"{','.join(OPTIONAL_COLUMNS)} (in that order, or the first few)")
    return {}, [(number, row) for number, row in enumerate(reader, start=2)]


def read_votes(path: str | Path) -> VoteFile:
    """Read a vote export (JSONL or CSV by extension); raise VoteFileError if it is bad."""
    kind = check_suffix(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VoteFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VoteFileError(f"{path}: cannot be read ({exc})") from None
    header, records = (_jsonl_records if kind == "jsonl" else _csv_records)(text, path)
    found, errors = VoteFile(header), []
    for number, obj in records:
        try:
            _read_record(found, obj)
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        more = f" (and {len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
        raise VoteFileError(f"{path}: {len(errors)} bad vote line(s): "
                            + "; ".join(errors[:MAX_ERRORS]) + more)
    return found


def _read_record(found: VoteFile, obj) -> None:
    """Add one line's vote or photo record to `found`, or raise ValueError."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "record" not in obj:
        found.votes.append(parse_vote(obj))
        return
    if obj["record"] != PHOTO_RECORD or found.header.get("format_version", 1) < 2:
        raise ValueError(f"record {obj['record']!r} is not known (format 2 adds "
                         f"\"record\": \"{PHOTO_RECORD}\")")
    photo = parse_photo(obj)
    if photo.query_id in found.photos:
        raise ValueError(f"photo {photo.query_id} comes twice")
    found.photos[photo.query_id] = photo


def export_header(builds: list[str], exported_at: str, **extra) -> dict:
    """Return a JSONL header object; extra fields (e.g. "simulated") ride along."""
    return {"format_version": FORMAT_VERSION, "kind": KIND, "exported_at": exported_at,
            "builds": builds, **extra}


def write_votes(path: str | Path, header: dict, votes: list[Vote],
                photos: list[PhotoQuery] = ()) -> None:
    """Write votes as the web app's export does: JSONL or CSV by extension (photo
    records go in JSONL only)."""
    kind = check_suffix(path)
    if photos and kind != "jsonl":
        raise VoteFileError(f"{path}: photo records go in a .jsonl vote file only")
    with open(path, "w", newline="", encoding="utf-8") as f:
        if kind == "jsonl":
            f.write(json.dumps(header) + "\n")
            for record in [p.to_dict() for p in photos] + [v.to_dict() for v in votes]:
                f.write(json.dumps(record) + "\n")
        else:
            writer = csv.DictWriter(f, fieldnames=COLUMNS + OPTIONAL_COLUMNS,
                                    lineterminator="\n")
            writer.writeheader()
            for vote in votes:
                writer.writerow({k: "" if v is None else v for k, v in vote.to_dict().items()})
