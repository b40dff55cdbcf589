"""Outlines: a small picture of a big job's cut-out, as soon as its mask is known.

A rembg job on a big image spends a second or more after its model ran (cut-out, strength
blend, PNG encode, write) and often as long before it (decode, the model). Once the mask
is known (from the model, or from the mask cache) the job renders the image's cut-out on
that mask at most ``SIDE`` pixels on its long side, keeps it here under its job id, and
says so in a ``progress`` frame (``outline_url``: ``GET /api/jobs/{job_id}/outline``); the
page shows it until the full result arrives.

Only jobs on images of at least ``MIN_PIXELS`` get one: below that a job on the default
two cores takes about half a second or less in all, which is about what fetching and
showing an outline would take. Rendering one costs ~10 ms at 2-12 MP: a nearest-neighbour
sample at ``OVERSAMPLE`` times the outline's size (4 pixels per outline pixel, not the
whole image: a box-filtered reduce of 12 MP took ~45 ms a job), then a bilinear resize of
that small image, which smooths the sample's aliasing enough for a preview.

Bound: the store keeps the newest outlines up to ``MAX_BYTES`` of PNG (8 MiB: a few
hundred outlines of 10-60 KB each; at most 256 KB each, so never fewer than 32); older
ones are dropped first. Thread-safe: worker threads put, the event loop gets.
"""

from __future__ import annotations

from PIL import Image

from playground_rt.pipeline import png
from playground_rt.pipeline.lru import SizedLRU

__all__ = ["MAX_BYTES", "MIN_PIXELS", "SIDE", "OutlineStore", "render", "url"]

MIN_PIXELS = 1_000_000
"""Images smaller than this get no outline (see the module docstring)."""
SIDE = 256
"""The outline's long side at most, in pixels."""
OVERSAMPLE = 2
"""The nearest-neighbour sample's size, in outline sizes (see the module docstring)."""
MAX_BYTES = 8 * 1024 * 1024
"""The store's bound: the PNG bytes it keeps, newest first."""


def url(job_id: str) -> str:
    return f"/api/jobs/{job_id}/outline"


def wanted(image: Image.Image) -> bool:
    """Whether a job on ``image`` gets an outline."""
    return image.width * image.height >= MIN_PIXELS


def render(image: Image.Image, mask: Image.Image) -> bytes:
    """The cut-out of ``image`` on the L ``mask`` (its size), scaled to ``SIDE`` at most,
    as an RGBA PNG."""
    scale = min(1.0, SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = _small(image, size).convert("RGBA")
    small.putalpha(_small(mask, size).convert("L"))
    return png.encode(small)


def _small(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    sample = (size[0] * OVERSAMPLE, size[1] * OVERSAMPLE)
    if sample[0] < image.width and sample[1] < image.height:
        image = image.resize(sample, Image.Resampling.NEAREST)
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA")
    return image.resize(size, Image.Resampling.BILINEAR)


class OutlineStore:
    """Outline PNGs by job id, newest kept, bounded by ``max_bytes`` (see the module)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kept: SizedLRU[str, bytes] = SizedLRU(max_bytes, len)

    @property
    def nbytes(self) -> int:
        return self._kept.nbytes

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, job_id: str, data: bytes) -> None:
        self._kept.put(job_id, data)

    def get(self, job_id: str) -> bytes | None:
        return self._kept.get(job_id, touch=False)  # the newest kept, not the most read
