"""Thumbnails of the images under the data root, for the page's dataset browser.

A thumbnail is made on demand (``GET /api/datasets/thumbnail?path=...&size=...``) in a thread,
at most ``MAKERS`` at a time and once however many requests ask for it at once, and kept
under ``{outputs_root}/thumbnails`` as WebP (alpha kept). Its name hashes the image's path,
modification time, byte size and the thumbnail size, so an edited image gets a new one and
nothing is ever served stale. The folder is bounded by ``thumbnail_cache_bytes``: the least
recently served thumbnails go first (its index lives in memory and is rebuilt from the
folder at start-up, oldest modification time first).

The image is read with the request limits (bytes, pixels from the header) and only the
formats a request may use; JPEGs are decoded at a reduced scale (``Image.draft``), so a
12 MP photo costs a fraction of a full decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps

from playground_rt import errors
from playground_rt.paths import confine
from playground_rt.pipeline.images import FORMATS, Limits
from playground_rt.pipeline.results import TEMP_PREFIX, write_atomic
from playground_rt.web.datasets import SUFFIXES

SIZES = (128, 256)
"""The sizes made (longest side): a request asks for the smallest one at least as big."""
MAKERS = 2
QUALITY = 80


def snap(size: int) -> int:
    return next((s for s in SIZES if s >= size), SIZES[-1])


class Thumbnails:
    def __init__(self, folder: Path, data_root: Path, limits: Limits, max_bytes: int) -> None:
        self.folder = folder
        self.data_root = data_root
        self.limits = limits
        self.max_bytes = max_bytes
        self._index: OrderedDict[str, int] = OrderedDict()  # name -> bytes, LRU first
        self._total = 0
        self._making: dict[str, asyncio.Future[Path]] = {}
        self._gate = asyncio.Semaphore(MAKERS)
        self._loaded = False

    async def get(self, given: str, size: int) -> Path:
        """The thumbnail file of the image ``given`` (a path under the data root).

        ``PathOutsideRoot``/``NotFound`` as for ``image_path``; ``TooLarge`` past the request
        limits; ``InvalidImage`` for a file that is not an image it may open.
        """
        if not self._loaded:
            self._load()
        source = confine(self.data_root, given, field="path")
        try:
            stat = os.stat(source) if os.path.isfile(source) else None
        except OSError:
            stat = None
        if stat is None or source.suffix.lower() not in SUFFIXES:
            raise errors.NotFound(f"no image {given[:300]!r} under the data root")
        if stat.st_size > self.limits.max_image_bytes:
            raise errors.TooLarge(
                f"image is larger than max_image_bytes={self.limits.max_image_bytes}"
            )
        side = snap(size)
        text = f"{source}\0{stat.st_mtime_ns}\0{stat.st_size}\0{side}"
        name = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".webp"
        path = self.folder / name
        if name in self._index:
            self._index.move_to_end(name)
            if path.is_file():
                return path
            self._forget(name)
        making = self._making.get(name)
        if making is None:
            making = asyncio.create_task(self._produce(source, side, path), name=name)
            self._making[name] = making
            making.add_done_callback(self._made)
        return await asyncio.shield(making)

    async def _produce(self, source: Path, side: int, path: Path) -> Path:
        async with self._gate:
            data = await asyncio.to_thread(self._make, source, side)
            await asyncio.to_thread(self._write, path, data)
        self._index[path.name] = len(data)
        self._total += len(data)
        while self._total > self.max_bytes and len(self._index) > 1:
            oldest = next(iter(self._index))
            with contextlib.suppress(OSError):
                (self.folder / oldest).unlink()
            self._forget(oldest)
        return path

    def _made(self, task: asyncio.Task[Path]) -> None:
        self._making.pop(task.get_name(), None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure is each requester's to report

    def _forget(self, name: str) -> None:
        self._total -= self._index.pop(name, 0)

    def _load(self) -> None:
        """Index what earlier runs left, oldest first; drop temp files of dead writes."""
        self._loaded = True
        if not self.folder.is_dir():
            return
        found = []
        for entry in os.scandir(self.folder):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif entry.name.endswith(".webp"):
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    found.append((stat.st_mtime, entry.name, stat.st_size))
        for _, name, size in sorted(found):
            self._index[name] = size
            self._total += size

    # --- threads -------------------------------------------------------------------------

    def _make(self, source: Path, side: int) -> bytes:
        try:
            image = Image.open(source, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise errors.TooLarge("image: more pixels than the decoder allows") from None
        except Exception as exc:
            raise errors.InvalidImage(f"not an image in an allowed format: {exc}") from None
        with image:
            width, height = image.size
            if width * height > self.limits.max_pixels:
                raise errors.TooLarge(
                    f"image is {width}x{height}; max_pixels={self.limits.max_pixels}"
                )
            try:
                image.draft("RGB", (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                upright = ImageOps.exif_transpose(image)
                upright.thumbnail((side, side), Image.Resampling.BILINEAR)
                has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
                small = upright.convert("RGBA" if has_alpha else "RGB")
            except Exception as exc:
                raise errors.InvalidImage(f"image could not be decoded: {exc}") from None
        buffer = io.BytesIO()
        small.save(buffer, "WEBP", quality=QUALITY, method=4)
        return buffer.getvalue()

    def _write(self, path: Path, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, temp_suffix=".part")
