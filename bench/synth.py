"""Synthetic test photos: a lit subject on a textured background, one distinct image per seed.

Distinct seeds give distinct bytes, so no image is ever a cache hit by accident. The images
are photo-like enough for u2netp to find a subject (a soft-edged figure with shading over a
low-frequency, noisy, striped background) and compress like photos rather than flat art.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter

SIZE = (640, 480)
F32 = npt.NDArray[np.float32]


def make_images(count: int, *, first_seed: int = 0) -> list[bytes]:
    """``count`` PNG files (640x480 RGB) for seeds ``first_seed, first_seed + 1, ...``."""
    return [png(photo(seed)) for seed in range(first_seed, first_seed + count)]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def photo(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    """One photo-like RGB image of ``size`` (the same scene, scaled, for every size)."""
    rng = np.random.default_rng(seed)
    background = Image.fromarray(_background(rng, size), "RGB")
    subject, mask = _subject(rng, size)
    background.paste(subject, (0, 0), mask)
    return background


def _background(rng: np.random.Generator, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    width, height = size
    coarse = rng.uniform(40, 215, size=(6, 8, 3)).astype(np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC), dtype=np.float32
    )
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(8, 40) * width / SIZE[0]
    stripes = 12 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    grain = rng.normal(0, 7, size=(height, width, 3)).astype(np.float32)
    return _clip(smooth + stripes[..., None] + grain)


def _subject(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """A head-and-shoulders figure with a vertical light gradient, and its soft mask."""
    width, height = size
    cx = int(rng.uniform(0.3, 0.7) * width)
    head = int(rng.uniform(0.09, 0.14) * height)
    top = int(rng.uniform(0.15, 0.3) * height)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((cx - head, top, cx + head, top + 2 * head), fill=255)
    shoulders = int(head * rng.uniform(2.2, 3.2))
    draw.ellipse((cx - shoulders, top + 2 * head, cx + shoulders, height + 2 * head), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(1.5 * width / SIZE[0]))
    colour = rng.uniform(30, 230, size=3).astype(np.float32)
    light = np.linspace(1.25, 0.7, height, dtype=np.float32)[:, None, None]
    texture = rng.normal(0, 5, size=(height, width, 3)).astype(np.float32)
    body: F32 = colour * light + texture
    return Image.fromarray(_clip(body), "RGB"), mask


def _clip(values: F32) -> npt.NDArray[np.uint8]:
    clipped: npt.NDArray[np.uint8] = np.clip(values, 0, 255).astype(np.uint8)
    return clipped
