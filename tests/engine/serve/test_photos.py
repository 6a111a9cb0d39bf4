"""Photos the service accepts, and each refusal's status and message."""

import io
import struct
import zlib

import pytest
from PIL import Image

from engine.serve.photos import MAX_PIXELS, PhotoError, clean_jpeg, read_photo


def _bytes(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height (a decompression bomb's header, tiny on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_jpeg_png_and_webp_are_read_as_rgb(fmt):
    photo = read_photo(_bytes(Image.new("RGB", (40, 30), (200, 10, 10)), fmt))
    assert photo.mode == "RGB" and photo.size == (40, 30)


def test_the_exif_orientation_is_applied_and_the_metadata_dropped():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "PhoneMaker"
    data = _bytes(Image.new("RGB", (60, 20), (0, 0, 255)), "JPEG", exif=exif.tobytes())
    photo = read_photo(data)
    assert photo.size == (20, 60)  # stood up
    assert not photo.getexif() and not photo.info.get("exif")
    kept = Image.open(io.BytesIO(clean_jpeg(photo)))  # what is stored, with consent
    assert kept.size == (20, 60) and not kept.getexif() and "exif" not in kept.info


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty body"),
    (b"just some text, not a picture", 415, "not an image"),
    (_png_header_only(20_000, 20_000), 413, "pixels"),
    (_bytes(Image.new("RGB", (10, 10)), "GIF"), 415, "GIF is not accepted"),
])
def test_bad_files_are_refused_with_a_clear_status(data, status, words):
    with pytest.raises(PhotoError, match=words) as caught:
        read_photo(data)
    assert caught.value.status == status


def test_a_truncated_jpeg_is_refused_not_half_read():
    data = _bytes(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(PhotoError) as caught:
        read_photo(data[: len(data) // 2])
    assert caught.value.status == 422


def test_a_photo_over_the_pixel_limit_is_refused_from_its_header():
    side = int(MAX_PIXELS ** 0.5) + 10
    with pytest.raises(PhotoError, match="pixels") as caught:
        read_photo(_png_header_only(side, side))
    assert caught.value.status == 413
