"""Whole-image passes in bands of rows, on one thread or several.

The per-pixel work after the model (the cut-out, the strength blend, the background colour)
is Pillow's own C loops (``crop``, ``convert``, ``paste`` with a mask, ``point``), and they
release the GIL: split into bands of rows that write disjoint parts of one output, a pass
runs on as many cores as the job may use (``OpContext.threads``: all of them when the job
is alone in the pool, one otherwise). A band of ``BAND_PIXELS`` keeps each step's
temporaries to about a megabyte. The bytes do not depend on the number of threads: each
band is computed the same way whichever thread takes it.

Measured on a 12 MP photo's cut-out and strength blend (2 cores, ``python -m bench.compose``):
one thread 194 ms, two threads 114 ms. :func:`on_threads` is the one way work is spread over
threads here and in the PNG encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["BANDS_PER_THREAD", "BAND_PIXELS", "Box", "boxes", "each", "on_threads"]

Box = tuple[int, int, int, int]
T = TypeVar("T")
R = TypeVar("R")

BAND_PIXELS = 1 << 18
"""Pixels per band of rows: ~1 MB of RGBA temporaries per band."""
BANDS_PER_THREAD = 3
"""A thread is worth starting for at least this many bands: below ~0.8 MP one thread is as
fast (0.3 MP: 5 ms on one, 6 on two; ``python -m bench.compose``)."""


def boxes(size: tuple[int, int]) -> list[Box]:
    """Boxes of whole rows covering an image of ``size``, ``BAND_PIXELS`` or so each."""
    width, height = size
    step = max(1, BAND_PIXELS // max(1, width))
    return [(0, top, width, min(height, top + step)) for top in range(0, height, step)]


def each(size: tuple[int, int], work: Callable[[Box], object], threads: int = 1) -> None:
    """``work(box)`` for every band of an image of ``size``, on up to ``threads`` threads.
    ``work`` must write only inside its box; the first exception is raised here."""
    bands = boxes(size)
    on_threads(work, bands, min(threads, len(bands) // BANDS_PER_THREAD))


def on_threads(work: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """``[work(item) for item in items]`` on up to ``threads`` threads (on the caller's alone
    for one thread or one item): the pieces of a row-wise pass here, the PNG encoder's
    segments (``pipeline.png``). The first exception is raised here."""
    if threads <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(work, items))
