"""An uploaded photo, checked before any network sees it.

Formats JPEG, PNG and WebP; at most MAX_BYTES; at most MAX_PIXELS decoded pixels
(decompression bombs are refused from the header, before decoding); the EXIF
orientation applied (a phone's portrait photo stands up) and the metadata dropped; the
whole file decoded (a truncated JPEG is an error, not a grey half). Every refusal is a
PhotoError with the HTTP status the service answers.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_BYTES = 15 * 2**20
MAX_PIXELS = 40_000_000


class PhotoError(ValueError):
    """A photo the service refuses: `status` (400, 413, 415 or 422) and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_photo(data: bytes) -> Image.Image:
    """Return the photo as an RGB image, upright, without metadata; raise PhotoError."""
    if not data:
        raise PhotoError(400, "the request has no photo (an empty body)")
    if len(data) > MAX_BYTES:
        raise PhotoError(413, f"the photo is {len(data):,} bytes; at most {MAX_BYTES:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise PhotoError(415, f"{image.format} is not accepted; send JPEG, PNG or WebP")
            if image.width * image.height > MAX_PIXELS:
                raise PhotoError(413, f"the photo is {image.width} x {image.height} pixels; "
                                      f"at most {MAX_PIXELS:,} pixels")
            image.load()
    except PhotoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(413, f"the photo decodes to more than {MAX_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise PhotoError(415, "not an image: send JPEG, PNG or WebP") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(422, f"the photo could not be decoded ({exc})") from None
    rgb = ImageOps.exif_transpose(image).convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())  # pixels only: no EXIF, no info


KEPT_SIDE = 1024  # a kept photo's long side at most


def clean_jpeg(image: Image.Image) -> bytes:
    """Return an upright photo (read_photo's) as a JPEG with no metadata, its long side
    at most KEPT_SIDE: what is stored when someone lets the site keep their photo."""
    image = image.copy()
    image.thumbnail((KEPT_SIDE, KEPT_SIDE))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=88)
    return out.getvalue()
