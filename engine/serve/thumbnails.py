"""The catalog's pictures for the try-it-out page: a match's thumbnail, made as the build
makes them (engine.formats.builddir.thumbnail_bytes), by image id.

A build stores thumbnails only of the images in its pairs; a photo's matches can be any
catalog item, so the service reopens the catalog the build read (its source, path,
limit, seed and repeat from engine-state.json) once, and encodes on demand, keeping the
last few hundred.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from engine.formats.builddir import thumbnail_bytes

KEPT = 512


class Thumbnails:
    """image id -> (bytes, content type) of its thumbnail; None for an unknown id."""

    def __init__(self, open_build):
        from engine.builder.catalog import load_catalog

        o = open_build.options
        self.catalog = load_catalog(o.catalog, o.catalog_path, limit=o.limit, queries=o.queries,
                                    seed=o.seed, repeat=o.repeat)
        self.row_of = {image_id: i for i, image_id in enumerate(self.catalog.image_id)}
        self._kept: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, image_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            if image_id in self._kept:
                self._kept.move_to_end(image_id)
                return self._kept[image_id]
        row = self.row_of.get(image_id)
        if row is None:
            return None
        data, ext = thumbnail_bytes(self.catalog[row])
        found = (data, "image/png" if ext == "png" else "image/jpeg")
        with self._lock:
            self._kept[image_id] = found
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return found
