"""What the image limits cost and bound: the header probe and the rembg op's memory.

    .venv/bin/python -m bench.limits probe            # scan bomb, 12 MP JPEGs: probe/decode ms
    .venv/bin/python -m bench.limits rembg            # peak RSS rise and time per rembg case
    .venv/bin/python -m bench.limits rembg --case 4000x3000:alpha_matting=1,strength=0.5

``rembg`` runs each case in a fresh subprocess (``--one``) so that peaks do not mix: the
model is loaded and warmed up on a small image, ``/proc/self/clear_refs`` resets the peak,
and the figure is VmHWM minus VmRSS before the op. Not registered in ``bench.main``: these
are spot checks of the limits, not throughput figures.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import onnxruntime as ort
import rembg
from PIL import Image
from rembg.sessions.base import BaseSession
from tests.conftest import sample_image
from tests.test_images import scan_bomb

from playground_rt import errors
from playground_rt.pipeline import images
from playground_rt.pipeline.ops import OpContext, SessionProvider, get_op, parse_params

from .report import best_ms

DEFAULT_CASES = (
    "4000x3000:",
    "4000x3000:strength=0.5",
    "1000x1000:alpha_matting=1",
    "4000x3000:alpha_matting=1",
    "4000x3000:alpha_matting=1,strength=0.5",
)


def _refusal_ms(data: bytes) -> tuple[float, str]:
    limits = images.Limits(20 << 20, 16_800_000)
    started = time.perf_counter()
    try:
        images.decode(data, limits)
    except errors.PlaygroundError as exc:
        return round((time.perf_counter() - started) * 1000, 3), exc.detail
    return round((time.perf_counter() - started) * 1000, 3), "decoded"


def probe() -> list[dict[str, Any]]:
    limits = images.Limits(20 << 20, 16_800_000)
    bomb = scan_bomb(4096, 4096, 20_000)
    ms, outcome = _refusal_ms(bomb)
    rows: list[dict[str, Any]] = [{"file": "scan bomb 4096x4096, 20000 scans", "bytes": len(bomb)}]
    rows[0].update(decode_ms=ms, outcome=outcome)
    photo = sample_image(4000, 3000, seed=11)
    for name, options in (
        ("12 MP q95 baseline", {"quality": 95}),
        ("12 MP q95 progressive", {"quality": 95, "progressive": True}),
        ("12 MP q10 baseline", {"quality": 10}),
    ):
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", **options)
        data = buffer.getvalue()
        rows.append(
            {
                "file": name,
                "bytes": len(data),
                "probe_ms": best_ms(partial(images.probe, data, limits), 20),
                "decode_ms": best_ms(partial(images.decode, data, limits), 3),
            }
        )
    return rows


class _Session(SessionProvider):
    def __init__(self, session: BaseSession) -> None:
        self._session = session

    def session(self, model: str, wide: bool = False) -> BaseSession:
        return self._session


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} missing from /proc/self/status")


_FLAGS = ("alpha_matting", "only_mask", "post_process_mask")


def _parse_case(case: str) -> tuple[int, int, dict[str, Any]]:
    size, _, options = case.partition(":")
    width, height = (int(v) for v in size.split("x"))
    params: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        params[key] = bool(int(value)) if key in _FLAGS else float(value)
    return width, height, params


def one(case: str) -> dict[str, Any]:
    """One rembg case in this process (run it in a fresh one)."""
    width, height, raw = _parse_case(case)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    ctx = OpContext(models=_Session(rembg.new_session("u2netp", sess_opts=options)))
    spec = get_op("rembg")
    spec.run(sample_image(64, 48), parse_params(spec, {}), ctx)  # load and warm up
    image: Image.Image = sample_image(width, height, seed=11)
    params = parse_params(spec, raw)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM
    before = _status_bytes("VmRSS")
    started = time.perf_counter()
    spec.run(image, params, ctx)
    seconds = time.perf_counter() - started
    rise = _status_bytes("VmHWM") - before
    return {"case": case, "peak_rise_mb": rise >> 20, "seconds": round(seconds, 2)}


def rembg_cases(cases: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        done = subprocess.run(
            [sys.executable, "-m", "bench.limits", "--one", case],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench.limits", description=__doc__)
    cli.add_argument("which", choices=["probe", "rembg"], nargs="?")
    cli.add_argument("--case", action="append", help="WxH:key=value,... (rembg params)")
    cli.add_argument("--one", help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    if args.one:
        rows = [one(args.one)]
    elif args.which == "probe":
        rows = probe()
    else:
        rows = rembg_cases(args.case or DEFAULT_CASES)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
