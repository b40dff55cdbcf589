"""The cluster benchmark: worker processes behind a remote web node, against one process.

One run, the same images for every phase (``--images N`` synthetic 640x480 PNGs, rembg
u2netp, ``POST /api/pipelines/fallback`` at concurrency 8, a fresh results folder and an
empty Redis per phase, so nothing is a cache hit):

* ``local 1x1`` / ``local 2x1``: ``playground-rt serve --workers 1|2 --intra-op-threads 1``;
* ``remote + 1 worker`` / ``remote + 2 workers``: ``serve`` with ``PLAYGROUND_EXECUTE=remote``
  and ``playground-rt worker --workers 1 --intra-op-threads 1`` processes, one Redis
  (a private ``redis-server``), everything on this machine.

Then the **Redis hop**: ``--hop-jobs`` tiny jobs (``preprocessing`` grayscale of a 64x48
PNG: ~1 ms of work) one at a time against ``local 1x1`` and ``remote + 1 worker``; the
difference of the median latencies is what the hop through Redis (queue entry, worker
wake-up, frames back through the history stream) costs a job. The same difference for
rembg jobs at concurrency 1 is printed too. Run::

    python -m bench.cluster [--quick] [--images N] [--hop-jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import redis
from PIL import Image

from . import httpload, servers, synth

CONCURRENCY = 8
WARM_SEED = 2_000_000
SOLO_SEED = 3_000_000
READY_TIMEOUT_S = 120.0


@dataclass
class Figure:
    config: str
    concurrency: int
    jobs: int
    per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    failures: int


@dataclass
class Results:
    meta: dict[str, object]
    throughput: list[Figure] = field(default_factory=list)
    hop: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    cli.add_argument("--quick", action="store_true", help="few images: a smoke run")
    cli.add_argument("--images", type=int, help="images per throughput phase (24, quick 6)")
    cli.add_argument("--hop-jobs", type=int, help="tiny jobs for the hop (60, quick 15)")
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = cli.parse_args(argv)
    args.images = args.images or (6 if args.quick else 24)
    args.hop_jobs = args.hop_jobs or (15 if args.quick else 60)
    args.model_home = args.model_home.expanduser().resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results = Results(meta={"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": vars(args)})
    results.meta["loadavg_start"] = list(os.getloadavg())
    print(f"generating {args.images} images (640x480) + 3 for warm-ups, {args.hop_jobs} tiny")
    pngs, warm = synth.make_images(args.images), synth.make_images(3, first_seed=WARM_SEED)
    tiny = [_tiny(seed) for seed in range(args.hop_jobs)]
    rembg = [httpload.fallback_request(p) for p in pngs]
    warm_requests = [httpload.fallback_request(p) for p in warm]
    hop = [_tiny_request(p) for p in tiny]
    solo = [httpload.fallback_request(p) for p in synth.make_images(8, first_seed=SOLO_SEED)]
    with tempfile.TemporaryDirectory(prefix="playground-cluster-bench-") as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        for workers in (1, 2):
            with _local(work, workers, args.model_home) as base:
                _warm(base, warm_requests)
                results.throughput.append(_run(f"local {workers}x1", base, rembg, CONCURRENCY))
                if workers == 1:
                    results.hop.append(_run("local 1x1, tiny", base, hop, 1))
                    results.hop.append(_run("local 1x1, rembg", base, solo, 1))
        with _redis(work) as url, _remote(work, url, args.model_home) as (base, add_worker):
            for workers in (1, 2):
                add_worker(f"w{workers}")
                _reset(work, url)
                _warm(base, warm_requests)
                _reset(work, url)
                label = f"remote + {workers} worker{'s' if workers > 1 else ''}"
                results.throughput.append(_run(label, base, rembg, CONCURRENCY))
                if workers == 1:
                    results.hop.append(_run("remote + 1 worker, tiny", base, hop, 1))
                    results.hop.append(_run("remote + 1 worker, rembg", base, solo, 1))
    results.meta["loadavg_end"] = list(os.getloadavg())
    _show(results)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(asdict(results), indent=2, default=str))
    print(f"results: {path}")
    return 1 if any(f.failures for f in results.throughput + results.hop) else 0


# --- load ---------------------------------------------------------------------------------


def _tiny(seed: int) -> bytes:
    """A distinct 64x48 PNG (no cache hit between the tiny jobs)."""
    image = Image.new("RGB", (64, 48), (seed % 256, (seed // 256) % 256, 90))
    image.putpixel((0, 0), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _tiny_request(png: bytes) -> httpload.Request:
    body = {
        "pipeline_id": "preprocessing",
        "image_base64": base64.b64encode(png).decode(),
        "params": {"grayscale": True},
    }
    path = "/api/pipelines/fallback"
    return httpload.Request(path, msgspec.json.encode(body), "application/json")


def _run(label: str, base: str, requests: list[httpload.Request], concurrency: int) -> Figure:
    print(f"{label}: {len(requests)} jobs at concurrency {concurrency}")
    run = asyncio.run(httpload.drive(base, requests, concurrency))
    bad = [b for b in run.bodies if b'"status":"completed"' not in b]
    failures = len(run.failures) + len(bad)
    return Figure(
        label,
        concurrency,
        len(requests),
        round(run.per_s, 3),
        round(run.percentile_ms(0.5), 1),
        round(run.percentile_ms(0.99), 1),
        round(1000 * statistics.fmean(run.latencies_s), 1),
        round(1000 * min(run.latencies_s), 1),
        failures,
    )


def _warm(base: str, requests: list[httpload.Request]) -> None:
    run = asyncio.run(httpload.drive(base, requests, 1))
    if run.failures:
        raise RuntimeError(f"warm-up of {base} failed: {run.failures[0]}")


# --- processes ----------------------------------------------------------------------------


def _env(model_home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env["U2NET_HOME"] = str(model_home)
    env.update({f"PLAYGROUND_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def _local(work: Path, workers: int, model_home: Path) -> Iterator[str]:
    outputs = work / f"outputs-local-{workers}"
    config = servers.PlaygroundConfig(workers, 1, outputs, work / "data", model_home)
    with servers.playground_server(config, work) as base:
        yield base


@contextlib.contextmanager
def _redis(work: Path) -> Iterator[str]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = servers.free_port()
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(work)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(url).ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _remote(work: Path, url: str, model_home: Path) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A remote web node; ``add(name)`` starts one more worker and waits for it."""
    outputs = work / "outputs-remote"
    port = servers.free_port()
    argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
    argv += ["--outputs-root", str(outputs), "--data-root", str(work / "data")]
    argv += ["--model-home", str(model_home), "--no-pull", "--log-level", "warning"]
    env = _env(model_home, broker=url, execute="remote")
    base = f"http://127.0.0.1:{port}"
    workers: list[subprocess.Popen[bytes]] = []

    def add(name: str) -> None:
        cmd = [sys.executable, "-m", "playground_rt.cli.main", "worker", "--name", name]
        cmd += ["--outputs-root", str(outputs), "--model-home", str(model_home), "--no-pull"]
        cmd += ["--workers", "1", "--intra-op-threads", "1", "--log-level", "warning"]
        with (work / f"worker-{name}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(cmd, env=_env(model_home, broker=url), stdout=log, stderr=log)
            )
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not client.exists(f"playground-rt:worker:{name}"):
            if workers[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start: see {work}/worker-{name}.log")
            time.sleep(0.1)

    try:
        with servers.running(argv, env, work / "web-remote.log", f"{base}/readyz"):
            yield base, add
    finally:
        for proc in workers:
            proc.terminate()
            try:
                proc.wait(servers.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _reset(work: Path, url: str) -> None:
    """No cache hit in the next phase: results removed, Redis's job records dropped (the
    workers' heartbeats and the group stay)."""
    shutil.rmtree(work / "outputs-remote" / "playground", ignore_errors=True)
    client = redis.Redis.from_url(url)
    for key in client.scan_iter("playground-rt:job:*"):
        client.delete(key)


# --- report -------------------------------------------------------------------------------


def _show(results: Results) -> None:
    print()
    print(f"{'throughput (rembg u2netp, 640x480)':40} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for f in results.throughput:
        print(f"{f.config:40} {f.per_s:7.2f} {f.p50_ms:8.1f} {f.p99_ms:8.1f}  fail {f.failures}")
    by = {f.config: f for f in results.throughput}
    for workers in (1, 2):
        remote = by.get(f"remote + {workers} worker{'s' if workers > 1 else ''}")
        local = by.get(f"local {workers}x1")
        if remote and local and local.per_s:
            print(f"  remote/local with {workers}: {remote.per_s / local.per_s:.2f}")
    print()
    print(f"{'one job at a time':40} {'p50 ms':>8} {'mean ms':>8} {'min ms':>8}")
    for f in results.hop:
        print(f"{f.config:40} {f.p50_ms:8.1f} {f.mean_ms:8.1f} {f.min_ms:8.1f}  fail {f.failures}")
    hop = {f.config: f for f in results.hop}
    for kind in ("tiny", "rembg"):
        remote, local = hop.get(f"remote + 1 worker, {kind}"), hop.get(f"local 1x1, {kind}")
        if remote and local:
            print(
                f"  Redis hop per job ({kind}): p50 +{remote.p50_ms - local.p50_ms:.1f} ms, "
                f"mean +{remote.mean_ms - local.mean_ms:.1f} ms, "
                f"min +{remote.min_ms - local.min_ms:.1f} ms"
            )
    print(f"load average: {results.meta['loadavg_start']} -> {results.meta['loadavg_end']}")


if __name__ == "__main__":
    raise SystemExit(main())
