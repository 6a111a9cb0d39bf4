"""Import torchvision on a CPU-only torch whose torchvision wheel was built for CUDA.

The pinned torchvision 0.28 wheel registers its C++ operators only when its compiled
extension matches the installed torch. With the CPU build of torch the extension does
not load, and ``torchvision/_meta_registrations.py`` then fails at import time with
``operator torchvision::nms does not exist``. Declaring the two operator schemas it
looks up (without kernels) lets the pure-Python parts (models, transforms) import.
Detection ops such as ``nms`` stay unavailable; the engine never calls them.

Every engine module imports torchvision through this module::

    from engine.nets.tvcompat import torchvision
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY: torch.library.Library | None = None


def _has_op(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def declare_missing_ops() -> list[str]:
    """Declare the torchvision operator schemas that are missing; return their names."""
    global _LIBRARY
    missing = [name for name in _SCHEMAS if not _has_op(name)]
    if missing:
        if _LIBRARY is None:
            # "FRAGMENT" adds to the torchvision namespace without claiming it.
            _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _LIBRARY.define(_SCHEMAS[name])
        logger.debug("declared torchvision op schemas without kernels: %s", missing)
    return missing


declare_missing_ops()

import torchvision  # noqa: E402

__all__ = ["declare_missing_ops", "torchvision"]
