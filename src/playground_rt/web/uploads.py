"""Keeping an uploaded image under the data root (``POST /api/datasets/uploads``).

An upload has no path, so the command the page shows for it cannot run as it is
(``IMAGE.png`` stands in). Saved here, it gets one: ``{data_root}/uploads/{hash}.{ext}``,
named by the first 32 hex digits of its bytes' sha256, so the same image is saved once and
its cache key (which hashes the same bytes) is unchanged. The bytes are checked as a
request's image is (size, an allowed format, pixels from the header) and written
atomically; ``uploads_max_bytes`` bounds the folder. ``save_uploads = false`` turns the
route off (403).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.paths import display
from playground_rt.pipeline import images
from playground_rt.pipeline.results import write_atomic

FOLDER = "uploads"
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def save(settings: Settings, request: schemas.UploadRequest) -> schemas.SavedUpload:
    """Check and save the upload; runs in a thread (it reads the folder and writes a file)."""
    if not settings.save_uploads:
        raise errors.Forbidden("saving uploads is turned off on this server (save_uploads)")
    limits = images.Limits(settings.max_image_bytes, settings.max_pixels)
    data = images.from_base64(request.image_base64, limits).data
    if len(data) > settings.max_image_bytes:
        raise errors.TooLarge(f"image is larger than max_image_bytes={settings.max_image_bytes}")
    extension = EXTENSIONS[_format(data, settings.max_pixels)]
    folder = settings.data_root / FOLDER
    target = folder / (hashlib.sha256(data).hexdigest()[:32] + extension)
    shown = display(settings.data_root, folder) + "/" + target.name
    if target.is_file() and target.stat().st_size == len(data):
        return schemas.SavedUpload(path=shown, bytes=len(data), created=False)
    used = _used(folder)
    if used + len(data) > settings.uploads_max_bytes:
        raise errors.TooLarge(
            f"the uploads folder holds {used} bytes; saving {len(data)} more would pass "
            f"uploads_max_bytes={settings.uploads_max_bytes}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data, temp_suffix=".part")
    return schemas.SavedUpload(path=shown, bytes=len(data), created=True)


def _format(data: bytes, max_pixels: int) -> str:
    """The image's format, from its header only; the same refusals as a request's image."""
    try:
        with Image.open(io.BytesIO(data), formats=images.FORMATS) as image:
            width, height = image.size
            kind = image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.TooLarge("image: more pixels than the decoder allows") from None
    except Exception:
        allowed = ", ".join(images.FORMATS)
        raise errors.InvalidImage(f"not an image in an allowed format ({allowed})") from None
    if width * height > max_pixels:
        raise errors.TooLarge(f"image is {width}x{height}; max_pixels={max_pixels}")
    assert kind in EXTENSIONS, kind
    return kind


def _used(folder: Path) -> int:
    try:
        return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
    except FileNotFoundError:
        return 0
