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


# --- photo-sized scenes (the size sweep) -----------------------------------------------------


def scene(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like RGB scene of any size, for the size sweep and the PNG encoder comparison.

    Its statistics do not depend on the size, as a camera's do not: a low-frequency colour
    field with a light gradient, a dozen soft-edged objects with their own shading, a
    textured surface (noise correlated over ~2 and ~4 pixels) and a sensor's per-pixel grain
    (sigma 2), and the head-and-shoulders subject of :func:`photo` scaled to the frame. So
    its JPEG and PNG files weigh about what a phone photo of that size weighs.
    """
    rng = np.random.default_rng(seed)
    height = size[1]
    coarse = rng.uniform(40, 215, size=(6, 8, 3)).astype(np.uint8)
    field = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    canvas = np.asarray(field, dtype=np.float32)
    canvas *= np.linspace(1.15, 0.8, height, dtype=np.float32)[:, None, None]
    _objects(canvas, rng)
    canvas += _texture(rng, size, cell=4, sigma=6.0)
    canvas += _texture(rng, size, cell=2, sigma=4.0)
    canvas += rng.normal(0, 2, size=canvas.shape).astype(np.float32)
    image = Image.fromarray(_clip(canvas), "RGB")
    del canvas
    _paste_subject(image, rng)
    return image


def _objects(canvas: F32, rng: np.random.Generator) -> None:
    """A dozen soft ellipses and boxes, each with a shading ramp, blended into ``canvas``."""
    height, width = canvas.shape[:2]
    small = (max(1, width // 8), max(1, height // 8))  # shapes drawn small, scaled up soft
    for _ in range(12):
        mask = Image.new("L", small, 0)
        draw = ImageDraw.Draw(mask)
        x0, y0 = rng.uniform(0, small[0]), rng.uniform(0, small[1])
        box = (
            x0,
            y0,
            x0 + rng.uniform(0.05, 0.3) * small[0],
            y0 + rng.uniform(0.05, 0.3) * small[1],
        )
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=255)
        alpha = (
            np.asarray(
                mask.filter(ImageFilter.GaussianBlur(1)).resize(
                    (width, height), Image.Resampling.BILINEAR
                ),
                dtype=np.float32,
            )[..., None]
            / 255
        )
        top, bottom = int(box[1] * 8), min(height, int(box[3] * 8) + 1)
        if bottom <= top:
            continue
        colour = rng.uniform(20, 235, size=3).astype(np.float32)
        ramp = np.linspace(1.2, 0.75, bottom - top, dtype=np.float32)[:, None, None]
        part = canvas[top:bottom]
        part += alpha[top:bottom] * (colour * ramp - part)


def _texture(rng: np.random.Generator, size: tuple[int, int], cell: int, sigma: float) -> F32:
    """Noise correlated over about ``cell`` pixels (a surface's texture), std ``sigma``."""
    width, height = size
    coarse = rng.normal(0, 1, size=(max(1, height // cell), max(1, width // cell), 3))
    scaled = ((coarse * sigma * 3 + 128).clip(0, 255)).astype(np.uint8)
    smooth = Image.fromarray(scaled, "RGB").resize(size, Image.Resampling.BICUBIC)
    texture: F32 = (np.asarray(smooth, dtype=np.float32) - np.float32(128)) / np.float32(3)
    return texture


def _paste_subject(image: Image.Image, rng: np.random.Generator) -> None:
    """:func:`photo`'s subject drawn at 640x480 and scaled to ``image`` (soft edges)."""
    subject, mask = _subject(rng, SIZE)
    subject = subject.resize(image.size, Image.Resampling.BILINEAR)
    mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    grain = rng.normal(0, 3, size=(image.height, image.width, 3)).astype(np.float32)
    textured = Image.fromarray(_clip(np.asarray(subject, dtype=np.float32) + grain), "RGB")
    image.paste(textured, (0, 0), mask)


def encoded(image: Image.Image, fmt: str) -> bytes:
    """``image`` as a camera would store it: JPEG quality 90 (4:2:0), or PNG (Pillow's default
    level 6, as most tools save)."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()
