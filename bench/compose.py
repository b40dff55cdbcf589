"""The rembg op's compositing after the model: the cut-out and the strength blend, timed.

On ``synth.scene`` at 0.3, 2 and 12 MP with u2netp's real mask, three ways to the same
bytes (checked): the **baseline**, the two passes of before (the whole cut-out, then the
blend over it: ``compose.cutout`` at strength 1, then ``compose.blend_cutout``, one thread),
the one pass over each band (``compose.cutout`` with the strength, one thread), and that pass
on every core (``--threads``, default the machine's). Wall time, best of ``--repeat``::

    python -m bench.compose [--sizes 0.3,2,12] [--strength 0.85] [--repeat 5] [--threads N]

Measured (2-core Xeon, quiet, strength 0.85), two passes / one pass / one pass on two threads:
12 MP 233 / 194 / 114 ms, 2 MP 40 / 32 / 21 ms, 0.3 MP 6 / 5 / 6 ms.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import synth
from .report import best_ms

SIZES = {"0.3": (640, 480), "2": (1728, 1152), "12": (4000, 3000)}


def main(argv: Sequence[str] | None = None) -> int:
    from playground_rt.pipeline.sessions import ModelRegistry

    cli = argparse.ArgumentParser(prog="python -m bench.compose", description=__doc__)
    cli.add_argument("--sizes", default=",".join(SIZES))
    cli.add_argument("--strength", type=float, default=0.85)
    cli.add_argument("--repeat", type=int, default=5)
    cli.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--quick", action="store_true", help="0.3 and 2 MP, 2 repeats")
    args = cli.parse_args(argv)
    sizes = ["0.3", "2"] if args.quick else args.sizes.split(",")
    repeat = 2 if args.quick else args.repeat
    models = ModelRegistry(args.model_home.expanduser(), Path("."), 1)
    status = 0
    title = f"cut-out + strength {args.strength} blend, best of {repeat}"
    print(f"{title}: ms (speed-up over the two passes)")
    for size in sizes:
        image = synth.scene(SIZES[size], seed=1)
        mask = models.session("u2netp").predict(image)[0]
        times, outputs = {}, []
        for name, way in _ways(image, mask, args.strength, args.threads).items():
            times[name], output = _best(way, repeat)
            outputs.append(np.asarray(output))
        same = all(np.array_equal(outputs[0], other) for other in outputs[1:])
        status = status or (0 if same else 1)
        base = next(iter(times.values()))
        row = ", ".join(f"{name} {ms:.0f} ({base / ms:.2f}x)" for name, ms in times.items())
        print(f"{size} MP: {row}; bytes equal: {same}")
    return status


def _ways(
    image: Image.Image, mask: Image.Image, strength: float, threads: int
) -> dict[str, Callable[[], Image.Image]]:
    from playground_rt.pipeline.ops import compose

    def two_passes() -> Image.Image:
        return compose.blend_cutout(image, compose.cutout(image, mask), strength)

    return {
        "two passes, 1 thread (before)": two_passes,
        "one pass, 1 thread": lambda: compose.cutout(image, mask, strength),
        f"one pass, {threads} threads": lambda: compose.cutout(image, mask, strength, threads),
    }


def _best(way: Callable[[], Image.Image], repeat: int) -> tuple[float, Image.Image]:
    made: list[Image.Image] = []
    return best_ms(lambda: made.append(way()), repeat), made[-1]


if __name__ == "__main__":
    raise SystemExit(main())
