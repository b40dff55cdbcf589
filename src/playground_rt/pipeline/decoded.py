"""Decoded images kept between jobs on the same bytes, within a byte bound.

A playground runs many jobs on one image: every slider move is a new job on the same bytes.
Decoding a 12 MP photo costs ~100 ms (JPEG) to ~700 ms (PNG): after the model (which the
mask cache skips) and the encode, the biggest part of a strength change. So the decoded
images are kept by the sha256 of their bytes (the cache key's image part), least recently
used first, within ``capacity_bytes`` (the ``decoded_cache_bytes`` setting: 64 MiB, one
image of 12 MP or eight of 2 MP; 0 keeps none), counted as Pillow holds them (4 bytes a
pixel, 1 for L and P).

A job reserves room for its image *before* decoding it (:meth:`DecodedImages.reserve`), so
what is kept plus the image being decoded stays within the bound where it can: a new big
image evicts older ones first instead of sitting beside them, and a job's peak memory is
what it was without the cache. An image bigger than the whole bound is not kept. A big image
evicted that way was freed into the heap of the worker thread that decoded it, which the new
job may not run on: :meth:`DecodedImages.reserve` gives those pages back to the system
(``malloc_trim``) before the new one is decoded. Without that, a 64 MiB bound raised a 12 MP
job's peak by the evicted image (+377 → +422 MB over idle); with it, +380 MB as with no
cache at all (``python -m bench.sweep --sizes 12 --set decoded_cache_bytes=...``).

Kept images are shared, read-only: every op returns a new image and writes nothing into
its input (``tests/test_ops.py`` checks each op), and several jobs may read one at once.
"""

from __future__ import annotations

from PIL import Image

from playground_rt.pipeline import arenas
from playground_rt.pipeline.lru import SizedLRU

__all__ = ["DecodedImages", "nbytes"]


def nbytes(image: Image.Image) -> int:
    """The bytes Pillow holds for ``image``'s pixels (RGB is stored 4 bytes a pixel)."""
    return image.width * image.height * (1 if image.mode in ("1", "L", "P") else 4)


class DecodedImages:
    """Decoded images by the sha256 of their bytes (see the module docstring)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.hits = 0
        self._kept: SizedLRU[str, Image.Image] = SizedLRU(capacity_bytes, nbytes)

    @property
    def nbytes(self) -> int:
        """The pixel bytes held now (never above the bound)."""
        return self._kept.nbytes

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, sha256: str) -> Image.Image | None:
        image = self._kept.get(sha256)
        if image is not None:
            self.hits += 1
        return image

    def reserve(self, size: int) -> int:
        """Make room for an image of ``size`` bytes about to be decoded; the bytes evicted.
        A big image evicted has its pages given back to the system (see the module
        docstring)."""
        evicted = self._kept.reserve(size)
        if evicted >= 4 * arenas.BIG_IMAGE_PIXELS:
            arenas.malloc_trim()
        return evicted

    def put(self, sha256: str, image: Image.Image) -> bool:
        """Keep ``image``; False when it is bigger than the whole bound."""
        return self._kept.put(sha256, image)
