"""The size sweep: per-stage cost, ms per megapixel and memory per job, server against floor.

For 0.3, 2 and 12 MP, JPEG and PNG inputs (``synth.scene``: photo-like, one distinct file per
job), and each pipeline (rembg ``{"strength": 0.85}``, rembg ``{}``, preprocessing
autocontrast + blur 5 + sharpen), a **fresh** ``playground-rt serve`` (defaults: 2 workers x 1
intra-op thread, adaptive threads) runs the jobs one at a time through
``POST /api/pipelines/fallback`` with ``image_path``; stages come from ``GET /api/jobs/{id}``.
Beside each, in this process, the **in-process floor** on the same files: decode
(``images.decode``) + ``rembg.remove`` on the server's all-cores session + the same PNG encode
(``images.encode_png``); for preprocessing, decode + the same ops + encode. Memory: the
server's RSS when idle after one warm-up job, and its peak (VmHWM) after the jobs: the rise
is what one job of that size costs. Then:

* a strength change on an image already seen, against that image's first job: right after
  it (0.85 -> 0.5, the slider case) and after another image ran (0.85 -> 0.4);
* A/B of onnxruntime's CPU arena (the options before issue 12, ``bench.arena_serve``) against
  the lean options now in ``pipeline.sessions``: idle RSS after a concurrency-8 warm-up
  and 640x480 throughput at concurrency 8, alternating, fresh servers;
* RSS with ``--queued`` (30) 12 MP jobs submitted at once (2 running, the rest queued).

Inputs are made once and kept in ``bench/results/sweep-inputs`` (the 12 MP PNGs take a
while); results go to ``bench/results/sweep-<time>.json``::

    python -m bench.sweep [--quick] [--sizes 0.3,2,12] [--formats jpeg,png] [--no-ab]
        [--pipelines "rembg 0.85,rembg {}"] [--queued 0] [--set NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from playground_rt.pipeline.arenas import IDLE_RELEASE_S

from . import httpload, servers, synth

SIZES = {"0.3": (640, 480), "2": (1728, 1152), "12": (4000, 3000)}
FORMATS = {"jpeg": "JPEG", "png": "PNG"}
PIPELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "rembg 0.85": ("rembg", {"strength": 0.85}),
    "rembg {}": ("rembg", {}),
    "preprocessing": (
        "preprocessing",
        {"autocontrast": True, "blur": {"kernelSize": 5}, "sharpen": True},
    ),
}
JOBS = {"0.3": 4, "2": 3, "12": 2}
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a photo-like 12 MP PNG is ~18 MB, near the 20 MiB default
INPUTS = Path(__file__).parent / "results" / "sweep-inputs"
WARM_SEED = 1_000_000
JSON = {"content-type": "application/json"}


@dataclass
class Row:
    """One (size, format, pipeline): the server's stages and memory, the floor's stages."""

    size: str
    fmt: str
    pipeline: str
    megapixels: float
    input_mb: float
    jobs: int
    stages: dict[str, float]
    """Median ms per stage of the server's jobs (``durations``), plus ``client``."""
    floor: dict[str, float]
    """Median ms per step in process: ``decode``, ``model`` (or ``ops``), ``encode``, ``total``."""
    idle_rss_mb: float
    peak_rise_mb: float
    """VmHWM after the jobs minus VmRSS when idle (after the warm-up)."""
    reblend: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.stages["total"] / self.floor["total"]


@dataclass
class Results:
    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    arena_ab: list[dict[str, Any]] = field(default_factory=list)
    queued: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__)
    cli.add_argument("--quick", action="store_true", help="0.3 and 2 MP, JPEG, one job each")
    cli.add_argument("--sizes", help="comma-separated, of 0.3, 2, 12 (default all; none: skip)")
    cli.add_argument("--formats", help="comma-separated, of jpeg, png (default both)")
    cli.add_argument(
        "--pipelines", help=f"comma-separated, of {', '.join(map(repr, PIPELINES))} (default all)"
    )
    cli.add_argument("--queued", type=int, help="12 MP jobs submitted at once (default 30)")
    cli.add_argument("--ab-rounds", type=int, help="arena A/B rounds (default 2)")
    cli.add_argument("--no-ab", action="store_true", help="skip the arena A/B")
    cli.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for the size rows (e.g. decoded_cache_bytes=67108864); repeatable",
    )
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = cli.parse_args(argv)
    sizes = args.sizes or ("0.3,2" if args.quick else ",".join(SIZES))
    args.sizes = [] if sizes == "none" else sizes.split(",")
    args.formats = (args.formats or ("jpeg" if args.quick else ",".join(FORMATS))).split(",")
    args.pipelines = args.pipelines.split(",") if args.pipelines else list(PIPELINES)
    unknown = sorted(set(args.pipelines) - set(PIPELINES))
    if unknown:
        cli.error(f"unknown pipelines {unknown}: known {list(PIPELINES)}")
    args.queued = args.queued if args.queued is not None else (4 if args.quick else 30)
    args.ab_rounds = args.ab_rounds or (1 if args.quick else 2)
    args.model_home = args.model_home.expanduser().resolve()
    pairs = [item.partition("=") for item in args.set]
    if any(not name or not eq for name, eq, _ in pairs):
        cli.error(f"--set takes NAME=VALUE: {args.set}")
    args.set = {name: value for name, _, value in pairs}
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results = Results(meta=_meta(args))
    path = args.results / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}.json"
    floor = Floor(args.model_home)
    with tempfile.TemporaryDirectory(prefix="playground-sweep-") as tmp:
        work = Path(tmp)
        for size in args.sizes:
            for fmt in args.formats:
                count = 1 if args.quick else JOBS[size]
                files = make_inputs(size, fmt, count)
                for name in args.pipelines:
                    print(f"{size} MP {fmt} {name}: floor, then server", flush=True)
                    results.rows.append(_config(size, fmt, name, files, floor, args, work))
                    save(results, path)
        if not args.no_ab:
            results.arena_ab = _arena_ab(args, work, results.problems)
            save(results, path)
        if args.queued:
            try:
                results.queued = _queued(args, work)
            except RuntimeError as exc:
                results.problems.append(str(exc))
    results.meta["loadavg_end"] = list(os.getloadavg())
    show(results)
    save(results, path)
    print(f"results: {path}")
    return 1 if results.problems else 0


def save(results: Results, path: Path) -> None:
    """The JSON record so far (written after every row, so a late failure loses nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(asdict(results)), indent=2))


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    versions = {n: metadata.version(n) for n in ("onnxruntime", "rembg", "pillow", "numpy")}
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "cores": len(os.sched_getaffinity(0)),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
    }


# --- inputs ---------------------------------------------------------------------------------


def make_inputs(size: str, fmt: str, count: int, first: int = 0) -> list[str]:
    """``count`` distinct files of one scene (a small patch differs), cached under ``INPUTS``;
    their paths relative to ``INPUTS`` (the servers' data root)."""
    ext = "jpg" if fmt == "jpeg" else "png"
    names = [f"{size}mp-{index}.{ext}" for index in range(first, first + count)]
    missing = [name for name in names if not (INPUTS / name).is_file()]
    if missing:
        INPUTS.mkdir(parents=True, exist_ok=True)
        print(f"making {len(missing)} {size} MP {fmt} inputs (once)", flush=True)
        base = np.asarray(synth.scene(SIZES[size], seed=1))
        for name in missing:
            index = int(name.split("-")[1].split(".")[0])
            variant = base.copy()
            variant[8 : 8 + 4, 8 + 4 * index : 12 + 4 * index] = (index * 37 % 256, 0, 255)
            data = synth.encoded(Image.fromarray(variant, "RGB"), FORMATS[fmt])
            (INPUTS / name).write_bytes(data)
    return names


def _warm_input() -> str:
    name = "warm-0.3mp.png"
    if not (INPUTS / name).is_file():
        INPUTS.mkdir(parents=True, exist_ok=True)
        (INPUTS / name).write_bytes(synth.make_images(1, first_seed=WARM_SEED)[0])
    return name


# --- the in-process floor -------------------------------------------------------------------


class Floor:
    """decode + ``rembg.remove`` (or the preprocessing ops) + encode, in this process, on a
    session with the server's options on every core (what a lone server job gets)."""

    def __init__(self, model_home: Path) -> None:
        from playground_rt.pipeline import images
        from playground_rt.pipeline.sessions import ModelRegistry

        cores = len(os.sched_getaffinity(0))
        registry = ModelRegistry(model_home, Path(tempfile.gettempdir()), 1, wide_threads=cores)
        self.session = registry.session("u2netp", wide=cores > 1)
        self.limits = images.Limits(MAX_IMAGE_BYTES, 50_000_000)

    def measure(self, pipeline: str, files: list[str]) -> dict[str, float]:
        steps: dict[str, list[float]] = {}
        for name in files:
            for step, ms in self._one(pipeline, (INPUTS / name).read_bytes()).items():
                steps.setdefault(step, []).append(ms)
        return {step: round(statistics.median(v), 1) for step, v in steps.items()}

    def _one(self, pipeline: str, data: bytes) -> dict[str, float]:
        import rembg

        from playground_rt.pipeline import images
        from playground_rt.pipeline import registry as pipelines
        from playground_rt.pipeline.ops.base import OpContext

        pid, params = PIPELINES[pipeline]
        t0 = time.perf_counter()
        image = images.decode(data, self.limits)
        t1 = time.perf_counter()
        if pid == "rembg":
            output = rembg.remove(image, session=self.session)
            assert isinstance(output, Image.Image)
        else:
            plan = pipelines.get_pipeline(pid).plan(params)
            output = pipelines.apply(plan.steps, image, OpContext())
        t2 = time.perf_counter()
        images.encode_png(output)
        t3 = time.perf_counter()
        step = "model" if pid == "rembg" else "ops"
        ms = {"decode": t1 - t0, step: t2 - t1, "encode": t3 - t2, "total": t3 - t0}
        return {k: 1000 * v for k, v in ms.items()}


# --- servers --------------------------------------------------------------------------------


@dataclass
class Served:
    base: str
    pid: int

    def status(self, field: str) -> float:
        """``VmRSS``/``VmHWM`` of the server process, in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def settled_rss(self) -> float:
        """VmRSS once the server rests: after the idle release of onnxruntime's arenas
        (``arenas.IDLE_RELEASE_S``), when it stopped moving (2 s within 5 MB; 60 s at most)."""
        time.sleep((IDLE_RELEASE_S or 0) + 0.5)
        readings = [self.status("VmRSS")]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            readings.append(self.status("VmRSS"))
            if len(readings) >= 5 and max(readings[-5:]) - min(readings[-5:]) < 5:
                break
        return readings[-1]

    def reset_peak(self) -> None:
        """VmHWM := VmRSS (Linux's clear_refs 5), so the next peak is the next job's own."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def serve(
    args: argparse.Namespace, work: Path, label: str, arena: bool = False, **settings: str
) -> Iterator[Served]:
    """A fresh server (fresh outputs root) on the sweep inputs; ``arena``: the old options."""
    port = servers.free_port()
    module = "bench.arena_serve" if arena else "playground_rt.cli.main"
    argv = [sys.executable, "-m", module, "serve", "--port", str(port), "--no-pull"]
    argv += ["--outputs-root", str(work / f"outputs-{label}-{time.monotonic_ns()}")]
    argv += ["--data-root", str(INPUTS), "--model-home", str(args.model_home)]
    argv += ["--max-image-bytes", str(MAX_IMAGE_BYTES), "--log-level", "warning"]
    env = servers._clean_env(args.model_home)
    env.update({f"PLAYGROUND_{name.upper()}": value for name, value in settings.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])
    base = f"http://127.0.0.1:{port}"
    with servers.running(argv, env, work / f"server-{label}.log", f"{base}/readyz") as proc:
        yield Served(base, proc.pid)


def client(served: Served) -> httpx.Client:
    return httpx.Client(base_url=served.base, headers=JSON, timeout=600)


def fallback(client: httpx.Client, pipeline: str, path: str, **extra: Any) -> dict[str, Any]:
    """Run one job through ``/fallback``; its job view, with ``client`` ms added."""
    pid, params = PIPELINES[pipeline]
    body = {"pipeline_id": pid, "image_path": path, "params": {**params, **extra}}
    started = time.perf_counter()
    answer = client.post("/api/pipelines/fallback", content=msgspec.json.encode(body))
    client_ms = 1000 * (time.perf_counter() - started)
    done = answer.json()
    if answer.status_code != 200 or done.get("status") != "completed":
        raise RuntimeError(f"{pipeline} {path}: {answer.status_code} {answer.text[:300]}")
    view: dict[str, Any] = client.get(f"/api/jobs/{done['job_id']}").json()
    if view.get("cache_hit"):
        raise RuntimeError(f"{pipeline} {path}: unexpected cache hit")
    view["durations"]["client"] = client_ms
    return view


def _config(
    size: str,
    fmt: str,
    pipeline: str,
    files: list[str],
    floor: Floor,
    args: argparse.Namespace,
    work: Path,
) -> Row:
    floor_ms = floor.measure(pipeline, files)
    with serve(args, work, f"{size}-{fmt}", **args.set) as served, client(served) as http:
        fallback(http, pipeline, _warm_input())
        idle = served.settled_rss()
        served.reset_peak()
        views = [fallback(http, pipeline, name) for name in files]
        peak = served.status("VmHWM")
        reblend = {}
        if PIPELINES[pipeline][1].get("strength") == 0.85:
            # The slider case: the image just run, dialled; then one seen before the last.
            just = fallback(http, pipeline, files[-1], strength=0.5)
            earlier = fallback(http, pipeline, files[0], strength=0.4) if len(files) > 1 else just
            reblend = {
                "first_ms": views[-1]["durations"]["total"],
                "reblend_ms": just["durations"]["total"],
                "earlier_first_ms": views[0]["durations"]["total"],
                "earlier_ms": earlier["durations"]["total"],
            }
    stages: dict[str, list[float]] = {}
    for view in views:
        for stage, ms in view["durations"].items():
            stages.setdefault(stage, []).append(float(ms))
    width, height = SIZES[size]
    return Row(
        size=size,
        fmt=fmt,
        pipeline=pipeline,
        megapixels=round(width * height / 1e6, 2),
        input_mb=round(statistics.mean((INPUTS / f).stat().st_size for f in files) / 1e6, 2),
        jobs=len(files),
        stages={stage: round(statistics.median(v), 1) for stage, v in stages.items()},
        floor=floor_ms,
        idle_rss_mb=round(idle),
        peak_rise_mb=round(peak - idle),
        reblend=reblend,
    )


def _arena_ab(args: argparse.Namespace, work: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Idle RSS after a concurrency-8 warm-up and c8 throughput: arena vs lean, alternating."""
    count = 8 if args.quick else 24
    pngs = synth.make_images(count, first_seed=2000)
    warm = synth.make_images(6, first_seed=3000)
    out = []
    for round_ in range(args.ab_rounds):
        for arena in (True, False):
            label = "arena (before)" if arena else "lean (now)"
            print(f"arena A/B round {round_ + 1}: {label}", flush=True)
            with serve(args, work, f"ab-{round_}-{arena}", arena=arena) as served:
                asyncio.run(httpload.drive(served.base, _bodies(warm[:1]), 1))
                asyncio.run(httpload.drive(served.base, _bodies(warm[1:]), 8))
                idle = served.settled_rss()
                served.reset_peak()
                run = asyncio.run(httpload.drive(served.base, _bodies(pngs), 8))
                busy = served.status("VmHWM")
                after = served.settled_rss()
            failures = len(run.failures)
            problems += [f"arena A/B {label}: {f}" for f in run.failures]
            out.append(
                {
                    "variant": label,
                    "round": round_,
                    "idle_rss_mb": round(idle),
                    "peak_mb": round(busy),
                    "rss_after_mb": round(after),
                    "per_s": round(run.per_s, 3),
                    "failures": failures,
                }
            )
    return out


def _bodies(pngs: list[bytes]) -> list[httpload.Request]:
    return [httpload.fallback_request(png) for png in pngs]


def _queued(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Peak RSS with ``args.queued`` 12 MP (quick: 2 MP) JPEG jobs submitted at once, against
    the peak of 2 such jobs alone: both peaks are taken while the first two jobs run (the pool
    has 2 workers), so their difference is what the waiting jobs hold."""
    size = "2" if args.quick else "12"
    files = make_inputs(size, "jpeg", args.queued + 2, first=100)
    print(f"{args.queued} queued {size} MP jobs, against 2 alone", flush=True)
    # one client submits them all: lift its fair share of the queue (16 by default)
    with serve(args, work, "queued", client_queue_share="0") as served, client(served) as http:
        fallback(http, "rembg 0.85", _warm_input())
        idle = served.settled_rss()
        alone = _first_two_peak(http, served, files[:2])
        idle_again = served.settled_rss()
        many = _first_two_peak(http, served, files[2:])
    return {
        "size": size,
        "jobs": args.queued,
        "bytes_held_mb": round(sum((INPUTS / f).stat().st_size for f in files[2:]) / 1e6, 1),
        "idle_rss_mb": round(idle),
        "two_alone_peak_rise_mb": round(alone - idle),
        "queued_peak_rise_mb": round(many - idle_again),
        "queue_holds_mb": round((many - idle_again) - (alone - idle)),
    }


def _first_two_peak(http: httpx.Client, served: Served, files: list[str]) -> float:
    """Submit ``files`` as strength-0.85 jobs; VmHWM once the first two have finished (the
    rest are then cancelled)."""
    served.reset_peak()
    jobs = []
    for index, name in enumerate(files):
        body: dict[str, Any] = {"pipeline_id": "rembg", "image_path": name}
        body |= {"params": {"strength": 0.85}, "taskId": f"sweep-{name}"}
        answer = http.post("/api/pipelines/preview", content=msgspec.json.encode(body))
        if answer.status_code != 200:
            raise RuntimeError(f"queued #{index}: {answer.status_code} {answer.text[:300]}")
        jobs.append((answer.json()["job_id"], body["taskId"]))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = [http.get(f"/api/jobs/{job}").json()["state"] for job, _ in jobs[:2]]
        if all(state in ("completed", "failed", "cancelled") for state in states):
            break
        time.sleep(0.2)
    peak = served.status("VmHWM")
    for job_id, task in jobs[2:]:
        http.delete(f"/api/jobs/{job_id}", params={"taskId": task})
    return peak


# --- printing -------------------------------------------------------------------------------


def show(results: Results, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 200)
    meta = results.meta
    console.print(
        f"\n[bold]size sweep[/] on {meta['cores']} cores, load average "
        f"{meta['loadavg_start']} -> {meta.get('loadavg_end')}"
    )
    console.print(_rows_table(results.rows))
    for problem in results.problems:
        console.print(f"[red]problem:[/] {problem}")
    console.print(_floor_table(results.rows))
    if any(row.reblend for row in results.rows):
        console.print(_reblend_table(results.rows))
    if results.arena_ab:
        console.print(_ab_table(results.arena_ab))
    if results.queued:
        q = results.queued
        console.print(
            f"{q['size']} MP strength jobs, idle RSS {q['idle_rss_mb']} MB: 2 alone peak "
            f"+{q['two_alone_peak_rise_mb']} MB; {q['jobs']} submitted at once "
            f"({q['bytes_held_mb']} MB of files) peak +{q['queued_peak_rise_mb']} MB while the "
            f"first 2 ran: the waiting jobs hold {q['queue_holds_mb']} MB"
        )


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < 3 else "right")
    return table


def _rows_table(rows: list[Row]) -> Table:
    table = _table(
        "server jobs (one at a time, fresh server per row; median ms)",
        "MP",
        "input",
        "pipeline",
        "decode",
        "ops",
        "encode",
        "write",
        "total",
        "ms/MP",
        "floor",
        "x floor",
        "idle RSS",
        "+peak MB",
    )
    for row in rows:
        s = row.stages
        table.add_row(
            row.size,
            f"{row.fmt} {row.input_mb} MB",
            row.pipeline,
            f"{s.get('decode', 0):.0f}",
            f"{s.get('ops', 0):.0f}",
            f"{s.get('encode', 0):.0f}",
            f"{s.get('write', 0):.0f}",
            f"{s['total']:.0f}",
            f"{s['total'] / row.megapixels:.0f}",
            f"{row.floor['total']:.0f}",
            f"{row.ratio:.2f}",
            f"{row.idle_rss_mb:.0f}",
            f"{row.peak_rise_mb:.0f}",
        )
    return table


def _floor_table(rows: list[Row]) -> Table:
    table = _table("in-process floor (median ms)", "MP", "input", "pipeline", "decode")
    for column in ("model / ops", "encode", "total", "ms/MP"):
        table.add_column(column, justify="right")
    for row in rows:
        f = row.floor
        work = f.get("model", f.get("ops", 0.0))
        table.add_row(
            row.size,
            row.fmt,
            row.pipeline,
            f"{f['decode']:.0f}",
            f"{work:.0f}",
            f"{f['encode']:.0f}",
            f"{f['total']:.0f}",
            f"{f['total'] / row.megapixels:.0f}",
        )
    return table


def _reblend_table(rows: list[Row]) -> Table:
    table = _table("a strength change on an image seen", "MP", "input", "", "first ms")
    for column in ("just run: ms", "ratio", "seen earlier: ms", "ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        if row.reblend:
            first, again = row.reblend["first_ms"], row.reblend["reblend_ms"]
            earlier_first = row.reblend.get("earlier_first_ms", first)
            earlier = row.reblend.get("earlier_ms", again)
            table.add_row(
                row.size,
                row.fmt,
                "",
                f"{first:.0f}",
                f"{again:.0f}",
                f"{again / first:.2f}",
                f"{earlier:.0f}",
                f"{earlier / earlier_first:.2f}",
            )
    return table


def _ab_table(rows: list[dict[str, Any]]) -> Table:
    table = _table("onnxruntime arena A/B (640x480, concurrency 8)", "variant", "round", "")
    for column in ("idle RSS MB", "peak MB", "idle after MB", "img/s", "failures"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["variant"],
            str(row["round"]),
            "",
            str(row["idle_rss_mb"]),
            str(row["peak_mb"]),
            str(row["rss_after_mb"]),
            f"{row['per_s']:.2f}",
            str(row["failures"]),
        )
    lean = [r["per_s"] for r in rows if r["variant"].startswith("lean")]
    arena = [r["per_s"] for r in rows if r["variant"].startswith("arena")]
    if lean and arena:
        ratio = statistics.median(lean) / statistics.median(arena)
        table.caption = f"lean / arena throughput (medians): {ratio:.3f}"
    return table


if __name__ == "__main__":
    raise SystemExit(main())
