"""The try-it-out page and API against a stand-in query service on a real port, a real
SQLite file and the real image store: upload, blind judging, "the next one", reasons,
consent, refusals, the service down, per-address limits, and no variant in any byte."""

import base64
import io
import json
import os

import pytest
import sqlalchemy as sa
from conftest import make_loaded_app
from PIL import Image

from webapp.extensions import db
from webapp.models import Upload, UploadMatch, UploadVote, Variant

K = 3


def photo_bytes(fmt="JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (20, 120, 220)).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def tried(tmp_path, build_dir, service):
    return make_loaded_app(tmp_path, build_dir, DOPE_SERVICE_URL=service.url, DOPE_TRY_K=K)


def upload(client, data=None, consent=False, kind="image/jpeg", name="p.jpg"):
    form = {"photo": (io.BytesIO(photo_bytes() if data is None else data), name, kind)}
    if consent:
        form["consent"] = "1"
    return client.post("/api/try/photos", data=form, content_type="multipart/form-data")


def test_a_photo_is_searched_and_every_first_match_judged_once(tried):
    client = tried.test_client()
    answer = upload(client)
    assert answer.status_code == 201, answer.json
    photo, step, seen = answer.json["photo"], answer.json["first"], []
    while not step.get("done"):
        seen.append(step["image"])
        assert client.post("/api/try/vote", json={"token": step["token"],
                                                  "verdict": "dope"}).status_code == 201
        step = client.get(f"/api/try/{photo}/next").json
    with tried.app_context():
        firsts = db.session.scalars(sa.select(UploadMatch.image_id)
                                    .where(UploadMatch.rank == 1)).all()
        variants = db.session.scalar(sa.select(sa.func.count()).select_from(Variant)
                                     .where(Variant.control.is_(False)))
        matches = db.session.scalar(sa.select(sa.func.count()).select_from(UploadMatch))
        votes = db.session.scalar(sa.select(sa.func.count()).select_from(UploadVote))
    assert matches == variants * K
    assert len(seen) == len(set(seen)) == len(set(firsts)) == votes  # pooled: each image once
    for url in seen:  # every picture is in the store, fetched from the service if new
        assert client.get(url).status_code == 200


def test_after_a_nope_the_same_variants_next_match_and_a_reason(tried):
    client = tried.test_client()
    first = upload(client).json["first"]
    assert client.post("/api/try/more", json={"token": first["token"]}).status_code == 409
    client.post("/api/try/vote", json={"token": first["token"], "verdict": "nope"})
    assert client.post("/api/try/reason", json={"token": first["token"],
                                                "reason": "colour"}).json == {"ok": True}
    assert client.post("/api/try/reason", json={"token": first["token"],
                                                "reason": "smell"}).status_code == 400
    more = client.post("/api/try/more", json={"token": first["token"]}).json
    assert "token" in more
    with tried.app_context():
        nope = db.session.scalars(sa.select(UploadVote)).one()
        before = db.session.scalars(sa.select(UploadMatch).where(
            UploadMatch.nonce == first["token"])).one()
        after = db.session.scalars(sa.select(UploadMatch).where(
            UploadMatch.nonce == more["token"])).one()
    assert nope.nope_reason == "colour" and nope.verdict == "nope"
    assert after.variant_id == before.variant_id and after.rank > before.rank
    assert client.post("/api/try/vote", json={"token": more["token"],
                                              "verdict": "dope"}).status_code == 201
    assert client.post("/api/try/vote", json={"token": more["token"],
                                              "verdict": "dope"}).status_code == 409


def test_the_photo_is_kept_only_with_consent(tried):
    client = tried.test_client()
    upload(client)
    upload(client, consent=True)
    with tried.app_context():
        rows = db.session.scalars(sa.select(Upload).order_by(Upload.id)).all()
    assert rows[0].photo_file is None and rows[0].features  # features and votes only
    kept = os.path.join(tried.config["DOPE_PHOTO_DIR"], rows[1].photo_file)
    assert Image.open(kept).format == "JPEG"
    assert not os.path.exists(os.path.join(tried.config["DOPE_IMAGE_DIR"], rows[1].photo_file))
    assert client.get(f"/images/{rows[1].photo_file}").status_code == 404  # never served


@pytest.mark.parametrize("data, kind, status", [
    (b"", "image/jpeg", 400),                          # empty
    (b"%PDF-1.4 not an image", "image/png", 415),      # not an image (the service says)
    (photo_bytes(), "application/pdf", 415),           # wrong content type
])
def test_bad_files_get_a_clear_4xx_and_store_nothing(tried, data, kind, status):
    answer = upload(tried.test_client(), data, kind=kind)
    assert answer.status_code == status and answer.json["message"]
    with tried.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Upload)) == 0


def test_too_large_and_not_multipart_are_refused(tmp_path, build_dir, service):
    app = make_loaded_app(tmp_path, build_dir, DOPE_SERVICE_URL=service.url,
                          DOPE_MAX_PHOTO_BYTES=1000)
    client = app.test_client()
    big = upload(client, b"\xff\xd8\xff" + b"0" * 70000)
    assert big.status_code == 413 and "too large" in big.json["message"]
    raw = client.post("/api/try/photos", data=photo_bytes(), content_type="image/jpeg")
    assert raw.status_code == 415
    assert service.searches == 0


@pytest.mark.parametrize("fail", ["down", "500 Internal Server Error"])
def test_the_service_down_is_a_503_and_the_page_says_so(tmp_path, build_dir, service, fail):
    url = "http://127.0.0.1:9" if fail == "down" else service.url
    service.fail = None if fail == "down" else fail
    app = make_loaded_app(tmp_path, build_dir, DOPE_SERVICE_URL=url)
    client = app.test_client()
    answer = upload(client)
    assert answer.status_code == 503 and "resting" in answer.json["message"]
    assert answer.headers["Retry-After"]
    page = client.get("/try")
    assert page.status_code == 200 and "search is resting" in page.get_data(as_text=True)


def test_a_photo_is_its_uploaders_alone(tried):
    first = upload(tried.test_client())
    other = tried.test_client()
    assert other.get(f"/api/try/{first.json['photo']}/next").status_code == 404
    assert other.post("/api/try/vote", json={"token": first.json["first"]["token"],
                                             "verdict": "dope"}).status_code == 404


def test_photos_per_address_are_limited(tmp_path, build_dir, service):
    app = make_loaded_app(tmp_path, build_dir, DOPE_SERVICE_URL=service.url,
                          DOPE_ADDRESS_PHOTO_BURST=2, DOPE_ADDRESS_PHOTO_RATE=0.001)
    statuses = [upload(app.test_client()).status_code for _ in range(3)]
    assert statuses == [201, 201, 429] and service.searches == 2


def test_no_variant_leaks_in_any_byte_of_a_session(tried):
    client = tried.test_client()
    with tried.app_context():
        names = [(v.slug, v.name) for v in db.session.scalars(sa.select(Variant))]
    leaks = [s for slug, name in names for s in (slug, name) if s != "random"]
    bodies = [client.get("/try").get_data()]
    answer = upload(client)
    bodies.append(answer.get_data())
    photo, step = answer.json["photo"], answer.json["first"]
    client.post("/api/try/vote", json={"token": step["token"], "verdict": "nope"})
    bodies.append(client.post("/api/try/more", json={"token": step["token"]}).get_data())
    while not step.get("done"):
        bodies.append(client.post("/api/try/vote", json={"token": step["token"],
                                                         "verdict": "dope"}).get_data())
        response = client.get(f"/api/try/{photo}/next")
        bodies.append(response.get_data() + str(response.headers).encode())
        step = response.json
    for body in bodies:
        for word in leaks:
            assert word.encode() not in body, word


def test_photo_votes_have_their_own_board_never_pooled(tried):
    assert tried.test_client().get("/api/leaderboard?on=photos").status_code == 404
    for n in range(6):  # six visitors, a photo each, every first match judged
        client = tried.test_client()
        data = photo_bytes("PNG" if n % 2 else "JPEG")[:-2] + bytes([n, n])
        answer = upload(client, data, kind="image/png" if n % 2 else "image/jpeg")
        photo, step = answer.json["photo"], answer.json["first"]
        while not step.get("done"):
            client.post("/api/try/vote", json={"token": step["token"],
                                               "verdict": "dope" if n % 3 else "nope"})
            step = client.get(f"/api/try/{photo}/next").json
    assert tried.test_cli_runner().invoke(args=["fit"]).exit_code == 0
    client = tried.test_client()
    photos = client.get("/api/leaderboard?on=photos").json
    catalog = client.get("/api/leaderboard").json
    assert photos["photos"] and catalog["photos_board"] and not catalog["photos"]
    real = [v for v in photos["variants"] if not v["control"]]
    assert all(v["votes"] > 0 and v["estimate"] is not None for v in real)
    assert all(v["ci_low"] <= v["estimate"] <= v["ci_high"] for v in real)
    assert catalog["fit"]["judgments"] == 0  # the game's board: no photo vote in it
    page = client.get("/leaderboard?on=photos").get_data(as_text=True)
    assert "on your photos" in page and "never" in page


def test_the_export_carries_photo_votes_with_their_source(tried, tmp_path):
    client = tried.test_client()
    first = upload(client).json["first"]
    client.post("/api/try/vote", json={"token": first["token"], "verdict": "nope",
                                       "reason": "pattern"})
    more = client.post("/api/try/more", json={"token": first["token"]}).json
    client.post("/api/try/vote", json={"token": more["token"], "verdict": "dope"})
    out = tmp_path / "votes.jsonl"
    assert tried.test_cli_runner().invoke(args=["export-votes", str(out)]).exit_code == 0
    record, *rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    # the photo's record comes first: what the service computed of it, never the photo
    assert record == {"record": "photo", "query_id": rows[0]["query_id"],
                      "build_id": rows[0]["build_id"],
                      "features": {"n.l": base64.b64encode(b"\x00\x3c" * 4).decode()}}
    assert [(r["source"], r["rank"], r["verdict"], r["nope_reason"]) for r in rows] == [
        ("photo", 1, "nope", "pattern"), ("photo", 2, "dope", None)]
    assert all(r["query_id"].startswith("photo:") and r["probability"] is None for r in rows)
