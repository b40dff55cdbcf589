"""In-process ceilings: what the hardware does with no server in the way.

*Raw ceiling*: ``InferenceSession.run`` on u2netp inputs that rembg's own ``normalize``
prepared beforehand (outside the timed region); only the runs are timed. *Library ceiling*:
the whole per-image work a server must do, in threads of this process: PNG decode,
``rembg.remove(image, session=...)`` (rembg's resize, normalisation, run, mask resize,
cutout) and PNG encode with the server's settings (``compress_level=1``).

Both use sessions with the server's options (inter-op 1, sequential, all graph
optimisations), are measured for every (threads x intra-op threads) split of the cores, and
keep the best of a few passes over the images.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rembg
from PIL import Image
from rembg.bg import naive_cutout
from rembg.sessions.base import BaseSession

# rembg 2.0.86 U2netpSession.predict's constants.
MEAN, STD, INPUT_SIZE = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320)
WARMUP_RUNS = 2


@dataclass(frozen=True)
class Split:
    """How the cores are shared: ``threads`` concurrent runs of ``intra`` threads each."""

    threads: int
    intra: int

    @property
    def label(self) -> str:
        return f"{self.threads}x{self.intra}"


@dataclass
class Throughput:
    split: str
    images: int
    wall_s: float
    per_s: float
    latency_ms_mean: float


def splits(cores: int) -> list[Split]:
    """Every-core splits worth measuring: one run per core, and one run using all cores."""
    if cores <= 1:
        return [Split(1, 1)]
    return [Split(cores, 1), Split(1, cores)]


def session(intra: int, model_home: Path) -> BaseSession:
    """A u2netp rembg session with the server's options (see ``pipeline.sessions``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    os.environ["U2NET_HOME"] = str(model_home)
    made: BaseSession = rembg.new_session(
        "u2netp", sess_opts=opts, providers=["CPUExecutionProvider"]
    )
    return made


def run_threads(
    work: Callable[[int], object], count: int, threads: int
) -> tuple[float, list[float]]:
    """Run ``work(i)`` for ``i`` in ``range(count)`` on ``threads`` threads pulling the next
    index; returns the wall time and each call's latency (seconds)."""
    lock, cursor, latencies = threading.Lock(), iter(range(count)), [0.0] * count

    def loop() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            started = time.perf_counter()
            work(index)
            latencies[index] = time.perf_counter() - started

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started, latencies


def _throughput(split: Split, wall_s: float, latencies: list[float]) -> Throughput:
    count = len(latencies)
    mean_ms = 1000 * sum(latencies) / count
    return Throughput(split.label, count, round(wall_s, 3), count / wall_s, round(mean_ms, 2))


def _best(split: Split, work: Callable[[int], object], count: int, passes: int) -> Throughput:
    """The best of ``passes`` passes over ``count`` items, after a warm-up.

    A ceiling is a maximum: interference from anything else on the machine only lowers a
    pass, so the best pass is the least disturbed estimate.
    """
    run_threads(lambda i: work(i % count), WARMUP_RUNS * split.threads, split.threads)
    tries = [_throughput(split, *run_threads(work, count, split.threads)) for _ in range(passes)]
    return max(tries, key=lambda t: t.per_s)


def raw(pngs: list[bytes], split: Split, model_home: Path, passes: int = 3) -> Throughput:
    """The raw ceiling for ``split``: only ``session.run`` is timed."""
    sess = session(split.intra, model_home)
    feeds = [sess.normalize(Image.open(io.BytesIO(p)), MEAN, STD, INPUT_SIZE) for p in pngs]
    inner = sess.inner_session
    return _best(split, lambda i: inner.run(None, feeds[i]), len(feeds), passes)


def library(pngs: list[bytes], split: Split, model_home: Path, passes: int = 3) -> Throughput:
    """The library ceiling for ``split``: decode, ``rembg.remove``, encode, per image."""
    sess = session(split.intra, model_home)

    def one(data: bytes) -> bytes:
        image = Image.open(io.BytesIO(data))
        image.load()
        cutout = rembg.remove(image, session=sess)
        assert isinstance(cutout, Image.Image)
        buffer = io.BytesIO()
        cutout.save(buffer, "PNG", compress_level=1)
        return buffer.getvalue()

    return _best(split, lambda i: one(pngs[i]), len(pngs), passes)


def anatomy(pngs: list[bytes], model_home: Path) -> dict[str, float]:
    """Mean ms of each step of rembg's u2netp path, one image at a time on one thread.

    The steps mirror ``rembg.remove`` and ``U2netpSession.predict`` of rembg 2.0.86, so they
    say where the library ceiling's time goes beyond ``session.run``.
    """
    sess = session(1, model_home)
    steps: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> float:
        now = time.perf_counter()
        steps.setdefault(name, []).append(1000 * (now - started))
        return now

    for data in [pngs[0], *pngs]:  # the first pass warms up and is dropped below
        t = time.perf_counter()
        image = Image.open(io.BytesIO(data))
        image.load()
        t = timed("decode", t)
        feed = sess.normalize(image, MEAN, STD, INPUT_SIZE)
        t = timed("normalize", t)
        pred = sess.inner_session.run(None, feed)[0][:, 0, :, :]
        t = timed("session.run", t)
        mask = _mask(pred, image.size)
        t = timed("mask", t)
        cutout = naive_cutout(image, mask)
        t = timed("cutout", t)
        cutout.save(io.BytesIO(), "PNG", compress_level=1)
        timed("encode", t)
    return {name: round(sum(v[1:]) / len(v[1:]), 2) for name, v in steps.items()}


def _mask(pred: np.ndarray, size: tuple[int, int]) -> Image.Image:
    low, high = np.min(pred), np.max(pred)
    scaled = np.squeeze((pred - low) / (high - low))
    mask = Image.fromarray((scaled * 255).astype(np.uint8))  # 2-D uint8: mode L
    return mask.resize(size, Image.Resampling.LANCZOS)
