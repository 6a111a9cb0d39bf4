"""A tried photo stored: the upload, every variant's matches, their pictures.

The service's answer names catalog items by image id; the web app stores images only
of the build's pairs, so a match it has no picture of is fetched once from the service
(`GET /v1/thumbnails/...`) into the image store, under its content hash, like every
other. Variants the web app does not know (another build's) are left out; a service
that shares no variant with the web app is ServiceDown (it serves another build).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import sqlalchemy as sa
from flask import current_app

from webapp.extensions import db
from webapp.jobs.builds import image_kind
from webapp.models import Image, Upload, UploadMatch, Variant
from webapp.play.tokens import new_voter_id
from webapp.tryout import service

EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def store_file(directory: str, data: bytes, ext: str) -> str:
    """Write bytes under their sha256 name (atomically, once); return the name."""
    os.makedirs(directory, exist_ok=True)
    name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
    target = os.path.join(directory, name)
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return name


def catalog_images(found: dict[str, str]) -> dict[str, int]:
    """Return {image id: Image row id} for catalog items ({image id: category}), one
    query for those stored; a picture is fetched for each of the others."""
    known: dict[str, int] = {}
    for image_id, row_id in db.session.execute(
            sa.select(Image.image_id, Image.id).where(Image.image_id.in_(list(found)))
            .order_by(Image.id)):
        known[image_id] = row_id  # the newest row wins
    for image_id in sorted(set(found) - set(known)):
        data = service.thumbnail(image_id)
        kind = image_kind(data)
        if kind is None:
            raise service.ServiceDown(f"the picture of {image_id} is not an image")
        name = store_file(current_app.config["DOPE_IMAGE_DIR"], data, EXTENSIONS[kind])
        row = Image(image_id=image_id, file=name,
                    category=str(found[image_id] or "")[:128] or "unknown")
        db.session.add(row)
        db.session.flush()
        known[image_id] = row.id
    return known


def create_upload(voter_id: str, origin: str | None, answer: dict) -> Upload:
    """Store an upload from the service's answer (its matches, its features, and the
    photo when the answer carries it: the visitor consented); committed."""
    variants = dict(db.session.execute(sa.select(Variant.slug, Variant.id)
                                       .where(Variant.control.is_(False))).all())
    known = {slug: found for slug, found in answer["variants"].items() if slug in variants}
    if not any(known.values()):
        raise service.ServiceDown("the query service searches a build this site does not show")
    images = catalog_images({str(m["image_id"]): m.get("category", "")
                             for found in known.values() for m in found})
    upload = Upload(nonce=new_voter_id(), voter_id=voter_id, origin=origin,
                    service_build=str(answer.get("build_id", ""))[:128],
                    features=json.dumps(answer.get("features") or {}))
    if answer.get("photo"):
        upload.photo_file = _keep_photo(answer["photo"])
    db.session.add(upload)
    db.session.flush()
    db.session.execute(sa.insert(UploadMatch), [
        {"nonce": new_voter_id(), "upload_id": upload.id, "variant_id": variants[slug],
         "rank": rank, "image_id": images[str(m["image_id"])],
         "distance": float(m.get("distance", 0.0))}
        for slug, found in known.items() for rank, m in enumerate(found, start=1)])
    db.session.commit()
    return upload


def _keep_photo(encoded: str) -> str:
    data = base64.b64decode(encoded)
    if image_kind(data) != "jpeg":
        raise service.ServiceDown("the query service's kept photo is not a JPEG")
    return store_file(current_app.config["DOPE_PHOTO_DIR"], data, "jpg")
