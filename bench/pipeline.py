"""The pipeline benchmark: raw ONNX ceiling, library ceiling, ``rembg s`` and playground-rt.

Everything is measured in one run on the same synthetic images (see ``bench/README.md`` for
what each figure means and how the ceilings are defined)::

    python -m bench.pipeline [--quick] [--images N] [--no-rembg-s]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import msgspec

from . import ceiling, httpload, report, servers, synth
from .ceiling import Split
from .report import CacheFigure, HttpFigure, Results, Stages

CONCURRENCY = (1, 8)
WARM_SEED = 1_000_000  # warm-up images never overlap the measured ones
FLOOR = "http floor (base64 body, 405)"
STAGES = ("queue", "decode", "op.rembg", "ops", "encode", "write", "total")


@dataclass
class Outcome:
    """What one server phase produced, plus every correctness problem met on the way."""

    figures: list[HttpFigure] = field(default_factory=list)
    stages: list[Stages] = field(default_factory=list)
    cache: list[CacheFigure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    cli.add_argument("--quick", action="store_true", help="few images: a smoke run")
    cli.add_argument("--images", type=int, help="distinct images per phase (default 48, quick 8)")
    cli.add_argument("--cache-requests", type=int, help="cache-hit requests (500, quick 100)")
    cli.add_argument("--passes", type=int, help="passes per ceiling, best kept (3, quick 2)")
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    cli.add_argument("--no-rembg-s", action="store_true", help="skip `rembg s` (no network)")
    args = cli.parse_args(argv)
    args.images = args.images or (8 if args.quick else 48)
    args.cache_requests = args.cache_requests or (100 if args.quick else 500)
    args.passes = args.passes or (2 if args.quick else 3)
    args.model_home = args.model_home.expanduser().resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    cores = _cores()
    results = Results(meta=_meta(args, cores))
    if os.getloadavg()[0] > 0.5 * cores:
        results.warnings.append(f"load average {os.getloadavg()} at the start: a busy machine")
        print(f"note: {results.warnings[-1]}; figures will be noisy")
    print(f"generating {args.images} images + 5 for warm-ups (640x480 PNG)")
    pngs, warm = synth.make_images(args.images), synth.make_images(5, first_seed=WARM_SEED)
    _ceilings(results, pngs, ceiling.splits(cores), args)
    with tempfile.TemporaryDirectory(prefix="playground-bench-") as tmp:
        work = Path(tmp)
        outcome = Outcome()
        if not args.no_rembg_s:
            _rembg_s(outcome, pngs, warm, args.model_home, work)
        _write_images(work / "data", pngs)
        for split in ceiling.splits(cores):
            _playground(outcome, split, pngs, warm, args, work)
    results.add(outcome.figures, outcome.stages, outcome.cache, outcome.problems)
    results.meta["loadavg_end"] = list(os.getloadavg())
    report.show(results)
    path = report.save(results, args.results)
    print(f"results: {path}")
    return 1 if outcome.problems else 0


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _meta(args: argparse.Namespace, cores: int) -> dict[str, object]:
    versions = {name: metadata.version(name) for name in ("onnxruntime", "rembg", "pillow")}
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "images": args.images,
        "cache_requests": args.cache_requests,
        "ceiling_passes": args.passes,
        "cores": cores,
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ceilings(
    results: Results, pngs: list[bytes], splits: list[Split], args: argparse.Namespace
) -> None:
    home, passes = args.model_home, args.passes
    for split in splits:
        print(f"raw ceiling, {split.label} (threads x intra-op), best of {passes} passes")
        results.raw.append(ceiling.raw(pngs, split, home, passes))
    for split in splits:
        print(f"library ceiling, {split.label}, best of {passes} passes")
        results.library.append(ceiling.library(pngs, split, home, passes))
    print("rembg step anatomy (1 thread, intra-op 1)")
    results.anatomy = ceiling.anatomy(pngs[: min(len(pngs), 8)], home)
    raw, lib = (max(t.per_s for t in rows) for rows in (results.raw, results.library))
    if lib > raw:
        results.warnings.append(
            f"library ceiling {lib:.2f}/s above the raw ceiling {raw:.2f}/s, which does less "
            "work: the machine was disturbed; rerun on a quiet machine"
        )


def _write_images(root: Path, pngs: list[bytes]) -> None:
    (root / "bench").mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(pngs):
        (root / "bench" / f"img-{index:03d}.png").write_bytes(data)


# --- rembg s ------------------------------------------------------------------------------


def _rembg_s(
    outcome: Outcome, pngs: list[bytes], warm: list[bytes], home: Path, work: Path
) -> None:
    requests = [httpload.rembg_request(p) for p in pngs]
    with servers.rembg_server(home, work) as base:
        _warm_up(base, [httpload.rembg_request(p) for p in warm])
        for concurrency in CONCURRENCY:
            print(f"rembg s, concurrency {concurrency}")
            run = asyncio.run(httpload.drive(base, requests, concurrency))
            bad = [i for i, body in enumerate(run.bodies) if not body.startswith(b"\x89PNG")]
            outcome.problems += [f"rembg s: {f}" for f in run.failures]
            outcome.problems += [f"rembg s: #{i} is not a PNG" for i in bad if not run.failures]
            outcome.figures.append(HttpFigure.of("rembg s", "default", run))


def _warm_up(base: str, requests: list[httpload.Request]) -> None:
    """One request alone (lazy session creation), then the rest two at a time."""
    for part, concurrency in ((requests[:1], 1), (requests[1:], 2)):
        run = asyncio.run(httpload.drive(base, part, concurrency))
        if run.failures:
            raise RuntimeError(f"warm-up of {base} failed: {run.failures[0]}")


# --- playground-rt ------------------------------------------------------------------------


def _playground(
    outcome: Outcome,
    split: Split,
    pngs: list[bytes],
    warm: list[bytes],
    args: argparse.Namespace,
    work: Path,
) -> None:
    requests = [httpload.fallback_request(p) for p in pngs]
    for concurrency in CONCURRENCY:
        # A fresh outputs root per run: nothing measured can be a cache hit.
        config = servers.PlaygroundConfig(
            workers=split.threads,
            intra=split.intra,
            outputs_root=work / f"outputs-{split.label}-c{concurrency}",
            data_root=work / "data",
            model_home=args.model_home,
        )
        with servers.playground_server(config, work) as base:
            _warm_up(base, [httpload.fallback_request(p) for p in warm])
            print(f"playground-rt {config.label}, concurrency {concurrency}")
            run = asyncio.run(httpload.drive(base, requests, concurrency))
            _account(outcome, config.label, base, run)
            if concurrency == CONCURRENCY[-1]:
                outcome.cache += _cache_hits(base, config.label, pngs, args.cache_requests)


def _account(outcome: Outcome, label: str, base: str, run: httpload.Run) -> None:
    """Check every answer ran on the server (no cache hit) and profile its stages."""
    name = f"playground-rt {label}"
    outcome.problems += [f"{name}: {f}" for f in run.failures]
    answers = [_json(body) for body in run.bodies]
    job_ids = [a.get("job_id", "?") if isinstance(a, dict) else "?" for a in answers]
    views = asyncio.run(httpload.get_json(base, [f"/api/jobs/{job}" for job in job_ids]))
    stage_ms: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for index, (answer, view) in enumerate(zip(answers, views, strict=True)):
        if not isinstance(answer, dict) or answer.get("status") != "completed":
            outcome.problems.append(f"{name} #{index}: not completed: {answer!r:.200}")
            continue
        if not isinstance(view, dict) or view.get("cache_hit") is not False:
            outcome.problems.append(f"{name} #{index}: unexpected cache hit or view {view!r:.200}")
            continue
        durations = view.get("durations", {})
        for stage in STAGES:
            stage_ms[stage].append(float(durations.get(stage, 0.0)))
    outcome.figures.append(HttpFigure.of("playground-rt", label, run))
    outcome.stages.append(Stages.of(label, run, stage_ms))


def _cache_hits(base: str, label: str, pngs: list[bytes], count: int) -> list[CacheFigure]:
    """``count`` repeats of computed requests through ``/preview``, one at a time, and the
    HTTP floor: the same base64 bodies POSTed to ``/healthz``, answered 405 without work."""
    base64_bodies = [httpload.fallback_request(p, "preview") for p in pngs]
    paths = [f"bench/img-{i:03d}.png" for i in range(len(pngs))]
    variants = {
        "image_base64": (base64_bodies, 200),
        "image_path": ([httpload.preview_path_request(p) for p in paths], 200),
        FLOOR: ([httpload.Request("/healthz", r.body, r.content_type) for r in base64_bodies], 405),
    }
    figures = []
    for variant, (distinct, expect) in variants.items():
        print(f"cache hits, {label}, {variant}")
        asyncio.run(httpload.drive(base, distinct[: min(10, len(distinct))], 1, expect))  # warm-up
        requests = [distinct[i % len(distinct)] for i in range(count)]
        run = asyncio.run(httpload.drive(base, requests, 1, expect))
        completed = sum(_status(body) == "completed" for body in run.bodies)
        misses = len(run.failures) if variant == FLOOR else count - completed
        figures.append(CacheFigure.of(label, variant, run, misses=misses))
    return figures


def _status(body: bytes) -> object:
    answer = _json(body)
    return answer.get("status") if isinstance(answer, dict) else None


def _json(body: bytes) -> object:
    """The decoded body, or the start of it as text when it is not JSON (an error page)."""
    try:
        decoded: object = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200].decode(errors="replace")
    return decoded


if __name__ == "__main__":
    raise SystemExit(main())
