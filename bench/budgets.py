"""``python -m bench.budgets`` (or ``python -m bench.main budgets``): speed and memory budgets
that used to be test assertions (the tests keep the behaviour; the figures live here, where
a loaded CI machine cannot fail them by chance).

* ``command build``: ``Catalog.build`` of a rembg preview, per call (the page rebuilds the
  command on each keystroke). Budget: 5 ms.
* ``session lookup``: ``ModelRegistry.session("u2netp")`` once the session exists, per call
  (every job asks). Budget: 10 µs: a dict lookup.
* ``finished jobs``: the RSS growth of ``playground-rt serve`` over ``--jobs`` (64, quick 16)
  finished previews of 1.4 MB noise PNGs, after 3 untimed ones. Finished jobs stay
  queryable for a while; if they kept their request's image bytes, 64 jobs would keep
  ~90 MB. Budget: 40 MiB for 64 jobs (scaled for fewer).

Each line prints the figure, its budget and ``ok`` or ``OVER``; the exit status is 1 when a
figure is over its budget.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from . import servers
from .load import MODEL_HOME, rss_kib

ROOT = Path(__file__).resolve().parents[1]
BUILD_CALLS = 200
LOOKUP_CALLS = 100_000
JOB_MIB_BUDGET = 40 / 64


def command_build_ms() -> float:
    from playground_rt import schemas
    from playground_rt.commands.builder import Catalog

    catalog = Catalog.load(ROOT / "examples" / "train_catalog.toml")
    preview = schemas.PipelineRequest(
        pipeline_id="rembg",
        image_path="data/datasets/images/val/sample.jpg",
        params={"strength": 0.85},
    )
    request = schemas.CommandBuildRequest(preview=preview)
    started = time.perf_counter()
    for _ in range(BUILD_CALLS):
        catalog.build(request)
    return 1000 * (time.perf_counter() - started) / BUILD_CALLS


def session_lookup_us(model_home: Path) -> float:
    from playground_rt.pipeline.sessions import ModelRegistry

    with tempfile.TemporaryDirectory() as custom:
        registry = ModelRegistry(model_home, Path(custom), intra_op_threads=1)
        first = registry.session("u2netp")
        started = time.perf_counter()
        for _ in range(LOOKUP_CALLS):
            assert registry.session("u2netp") is first
        return 1e6 * (time.perf_counter() - started) / LOOKUP_CALLS


def noise_png(rng: np.random.Generator) -> str:
    """An 800x600 PNG of noise, stored: about 1.4 MB that no cache or compressor shrinks."""
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(
        buffer, "PNG", compress_level=0
    )
    return base64.b64encode(buffer.getvalue()).decode()


def finished_jobs_mib(model_home: Path, jobs: int) -> float:
    """RSS growth of a server over ``jobs`` finished 1.4 MB previews."""
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = servers.free_port()
        argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
        argv += ["--workers", "1", "--outputs-root", str(root / "outputs")]
        argv += ["--data-root", str(root / "data"), "--model-home", str(model_home)]
        argv += ["--no-pull", "--log-level", "warning"]
        base = f"http://127.0.0.1:{port}"
        env = servers._clean_env(model_home)
        with (
            servers.running(argv, env, root / "server.log", f"{base}/readyz") as proc,
            httpx.Client(base_url=base, timeout=60, trust_env=False) as http,
        ):

            def preview() -> None:
                body = {
                    "pipeline_id": "preprocessing",
                    "image_base64": noise_png(rng),
                    "params": {"flip": True},
                }
                answer = http.post("/api/pipelines/fallback", json=body).json()
                assert answer["status"] == "completed", answer

            for _ in range(3):  # warm: pools, arenas, first allocations
                preview()
            before = rss_kib(proc.pid)
            for _ in range(jobs):
                preview()
            return (rss_kib(proc.pid) - before) / 1024


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench.budgets", description=__doc__)
    cli.add_argument("--quick", action="store_true", help="16 finished jobs instead of 64")
    cli.add_argument("--jobs", type=int, default=None, help="finished jobs (default 64)")
    cli.add_argument("--model-home", type=Path, default=MODEL_HOME)
    args = cli.parse_args(argv)
    jobs = args.jobs or (16 if args.quick else 64)
    figures = [
        ("command build", command_build_ms(), 5.0, "ms"),
        ("session lookup", session_lookup_us(args.model_home), 10.0, "µs"),
        (
            f"finished jobs ({jobs})",
            finished_jobs_mib(args.model_home, jobs),
            JOB_MIB_BUDGET * jobs,
            "MiB",
        ),
    ]
    over = False
    for name, value, budget, unit in figures:
        verdict = "ok" if value < budget else "OVER"
        over = over or value >= budget
        print(f"{name:24} {value:10.3f} {unit:4} budget {budget:g} {unit}  {verdict}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
