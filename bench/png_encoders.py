"""PNG encoders compared on the sweep's results: time, size, and pixels read back identical.

Images: ``synth.scene`` at 0.3, 2 and 12 MP run through the three pipelines of the sweep
(rembg ``{}``: an RGBA cut-out, transparent black outside the subject; rembg
``{"strength": 0.85}``: RGBA with 15 % of the background kept; preprocessing autocontrast +
blur 5 + sharpen: RGB). Encoders: Pillow's levels and strategies, ``playground_rt.pipeline.png``
(chosen) and the same writer with other filters and deflaters, and whichever of the other
maintained PyPI encoders are importable (none is a dependency; to include them::

    pip install --target .bench-png opencv-python-headless imagecodecs isal fpng
    python -m bench.png_encoders --extra-path .bench-png

Time is the encoding thread's CPU time (``time.thread_time``, best of ``--repeat``): every
encoder here runs on the calling thread, and CPU time is what a busy machine disturbs least.
Every output is decoded with Pillow and compared with the input, pixel for pixel::

    python -m bench.png_encoders [--sizes 0.3,2,12] [--repeat 3]

Measured at 12 MP (2-core Xeon, shared; CPU ms, best of 3, and MB), cut-out / strength /
photo: Pillow level 1 + Z_RLE (before) 1087 / 1817 / 1620 ms, 6.01 / 22.01 / 10.44 MB;
Up + zlib-ng L1 Z_RLE everywhere (chosen before) 201 / 440 / 398 ms, 6.10 / 22.53 /
12.46 MB; own Up + isal L1 120 / 310 / 211 ms, 6.96 / 25.18 / 13.71 MB; fpng 86 / 144 /
131 ms, 7.30 / 26.95 / 15.40 MB; cv2 L1 Z_RLE Sub 435 / 832 / 744 ms; imagecodecs png L1
1178 / 1569 / 1039 ms; Pillow's default level 6 1738 / 11550 / 8518 ms. Later, one run
(best of 2): ``playground_rt.pipeline.png`` with RLE or Huffman by segment 222 / 416 / 275 ms,
6.10 / 22.51 / 12.34 MB, against RLE everywhere 240 / 547 / 397 ms, 6.10 / 22.53 / 12.46 MB.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from PIL import Image

from . import synth

U8 = npt.NDArray[np.uint8]
Encoder = Callable[[U8], bytes]
SIZES = {"0.3": (640, 480), "2": (1728, 1152), "12": (4000, 3000)}
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "cut-out RGBA": ("rembg", {}),
    "strength RGBA": ("rembg", {"strength": 0.85}),
    "photo RGB": (
        "preprocessing",
        {"autocontrast": True, "blur": {"kernelSize": 5}, "sharpen": True},
    ),
}
BASELINE = "Pillow L1 Z_RLE (before)"


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.png_encoders", description=__doc__)
    cli.add_argument("--sizes", default="0.3,2,12")
    cli.add_argument("--repeat", type=int, default=3)
    cli.add_argument("--extra-path", type=Path, action="append", default=[])
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = cli.parse_args(argv)
    sys.path[:0] = [str(p.resolve()) for p in args.extra_path]
    encoders = candidates()
    print(f"encoders: {', '.join(encoders)}", flush=True)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for size in args.sizes.split(","):
        for kind, array in results_at(size, args.model_home.expanduser()).items():
            print(f"{size} MP {kind}", flush=True)
            base_ms = None
            for name, encode in encoders.items():
                ms, data = _time(encode, array, args.repeat)
                if not np.array_equal(np.asarray(Image.open(io.BytesIO(data))), array):
                    problems.append(f"{name} on {size} MP {kind}: pixels differ")
                base_ms = ms if name == BASELINE else base_ms
                rows.append({"size": size, "kind": kind, "encoder": name, "cpu_ms": ms,
                             "mb": len(data) / 1e6})  # fmt: skip
            for row in rows[-len(encoders) :]:
                row["speedup"] = (base_ms or row["cpu_ms"]) / row["cpu_ms"]
    show(rows)
    for problem in problems:
        print(f"problem: {problem}")
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"png-encoders-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode({"rows": rows}), indent=2))
    print(f"results: {path}")
    return 1 if problems else 0


def _time(encode: Encoder, array: U8, repeat: int) -> tuple[float, bytes]:
    best, data = float("inf"), b""
    for _ in range(repeat):
        started = time.thread_time()
        data = encode(array)
        best = min(best, time.thread_time() - started)
    return round(best * 1000, 1), data


def results_at(size: str, model_home: Path) -> dict[str, U8]:
    """The three kinds of result the sweep's pipelines make from the sweep's scene."""
    from playground_rt.pipeline import registry
    from playground_rt.pipeline.ops.base import OpContext
    from playground_rt.pipeline.sessions import ModelRegistry

    models = ModelRegistry(model_home, Path("."), 1)
    scene = synth.scene(SIZES[size], seed=1)
    out = {}
    for kind, (pipeline, params) in KINDS.items():
        plan = registry.get_pipeline(pipeline).plan(params)
        out[kind] = np.asarray(registry.apply(plan.steps, scene, OpContext(models=models)))
    return out


# --- the candidates -------------------------------------------------------------------------


def candidates() -> dict[str, Encoder]:
    """Every encoder that can run here, by name."""
    from playground_rt.pipeline import png

    found: dict[str, Encoder] = {
        BASELINE: lambda a: _pillow(a, compress_level=1, compress_type=zlib.Z_RLE),
        "playground_rt.pipeline.png (chosen: Up + zlib-ng L1, RLE or Huffman by segment)": (
            lambda a: png.encode(Image.fromarray(a))
        ),
        "own Up + zlib-ng L1 Z_RLE (chosen before)": lambda a: _own(
            a, "up", _zlib_ng(1, zlib.Z_RLE)
        ),
        "own Up + zlib-ng L1 Z_HUFFMAN_ONLY": lambda a: _own(
            a, "up", _zlib_ng(1, zlib.Z_HUFFMAN_ONLY)
        ),
        "Pillow L0": lambda a: _pillow(a, compress_level=0),
        "Pillow L1": lambda a: _pillow(a, compress_level=1),
        "Pillow L1 Z_HUFFMAN_ONLY": lambda a: _pillow(
            a, compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY
        ),
        "Pillow L2 Z_RLE": lambda a: _pillow(a, compress_level=2, compress_type=zlib.Z_RLE),
        "Pillow L3": lambda a: _pillow(a, compress_level=3),
        "Pillow L6 (its default)": lambda a: _pillow(a),
        "own Sub + zlib-ng L1 Z_RLE": lambda a: _own(a, "sub", _zlib_ng(1, zlib.Z_RLE)),
        "own Paeth + zlib-ng L1 Z_RLE": lambda a: _own(a, "paeth", _zlib_ng(1, zlib.Z_RLE)),
        "own Up + zlib-ng L1": lambda a: _own(a, "up", _zlib_ng(1, zlib.Z_DEFAULT_STRATEGY)),
        "own Up + stdlib zlib L1": lambda a: _own(a, "up", lambda b: zlib.compress(b, 1)),
    }
    found.update(_optional())
    return found


def _optional() -> dict[str, Encoder]:
    found: dict[str, Encoder] = {}
    try:
        from isal import isal_zlib

        found["own Up + isal L1"] = lambda a: _own(a, "up", lambda b: isal_zlib.compress(b, 1))
        found["own Up + isal L2"] = lambda a: _own(a, "up", lambda b: isal_zlib.compress(b, 2))
    except ImportError:
        pass
    try:
        import cv2

        rle = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY]
        rle += [cv2.IMWRITE_PNG_STRATEGY_RLE, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
        found["cv2 L1 Z_RLE Sub"] = lambda a: _cv2(cv2, a, rle)
        found["cv2 L1"] = lambda a: _cv2(cv2, a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    except ImportError:
        pass
    try:
        import imagecodecs

        found["imagecodecs png L1"] = lambda a: bytes(imagecodecs.png_encode(a, level=1))
        found["imagecodecs spng L1"] = lambda a: bytes(imagecodecs.spng_encode(a, level=1))
    except ImportError:
        pass
    try:
        import fpng

        found["fpng"] = lambda a: bytes(fpng.from_ndarray(a))
    except ImportError:
        pass
    return found


def _pillow(array: U8, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", **options)
    return buffer.getvalue()


def _cv2(cv2: Any, array: U8, params: list[int]) -> bytes:
    order = [2, 1, 0, 3] if array.shape[2] == 4 else [2, 1, 0]  # OpenCV wants BGR(A)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(array[..., order]), params)
    assert ok
    return bytes(buffer.tobytes())


def _zlib_ng(level: int, strategy: int) -> Callable[[bytes], bytes]:
    from zlib_ng import zlib_ng

    def deflate(data: bytes) -> bytes:
        stream = zlib_ng.compressobj(level, zlib_ng.DEFLATED, 15, 8, strategy)
        return stream.compress(data) + stream.flush()

    return deflate


def _own(array: U8, kind: str, deflate: Callable[[bytes], bytes]) -> bytes:
    """A whole-image PNG writer with one numpy filter for every row (the chosen module's
    design without its strips, for comparing filters and deflaters)."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    rows = array.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = {"up": 2, "sub": 1, "paeth": 4}[kind]
    if kind == "up":
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    elif kind == "sub":
        filtered[:, 1 : channels + 1] = rows[:, :channels]
        np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[:, channels + 1 :])
    else:
        filtered[:, 1:] = _paeth(rows.astype(np.int16), channels)
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    idat = _chunk(b"IDAT", deflate(filtered.tobytes()))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def _paeth(rows: npt.NDArray[np.int16], channels: int) -> U8:
    up, left, corner = np.zeros_like(rows), np.zeros_like(rows), np.zeros_like(rows)
    up[1:] = rows[:-1]
    left[:, channels:] = rows[:, :-channels]
    corner[1:, channels:] = rows[:-1, :-channels]
    pa, pb, pc = np.abs(up - corner), np.abs(left - corner), np.abs(left + up - 2 * corner)
    guess = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, corner))
    filtered: U8 = (rows - guess).astype(np.uint8)
    return filtered


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def show(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="PNG encoders: CPU ms (best), MB, speed-up over " + BASELINE)
    for column in ("MP", "result", "encoder", "CPU ms", "MB", "x"):
        table.add_column(
            column, justify="left" if column in ("MP", "result", "encoder") else "right"
        )
    for row in rows:
        table.add_row(row["size"], row["kind"], row["encoder"], f"{row['cpu_ms']:.1f}",
                      f"{row['mb']:.2f}", f"{row['speedup']:.1f}")  # fmt: skip
    Console(width=None if Console().is_terminal else 160).print(table)


if __name__ == "__main__":
    raise SystemExit(main())
