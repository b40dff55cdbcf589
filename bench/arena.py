"""onnxruntime memory options: idle RSS against inference throughput, one process per variant.

The server holds two u2netp sessions (one of 1 intra-op thread shared by the two workers, one
on every core for a lone job: ``pipeline.sessions``). Each variant builds that pair with
its options in a fresh process, warms up as the server does (lone runs on the wide session,
then both workers on the narrow one), then measures inference throughput with both workers
busy (what concurrency 8 is for the model) and the RSS left when idle. Variants alternate
within each round, so a busy machine disturbs them alike; the median of the rounds is shown::

    python -m bench.arena [--rounds 3] [--runs 40]
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VARIANTS: dict[str, str] = {
    "arena": "an arena per session, memory patterns on (the options before issue 12)",
    "arena+shrink": "arena on, run option memory.enable_memory_arena_shrinkage on every run",
    "no-arena": "enable_cpu_mem_arena=False (memory patterns on)",
    "no-arena+no-pattern": "enable_cpu_mem_arena=False, enable_mem_pattern=False",
    "no-arena+trim": "no arena; malloc_trim(0) after each run",
    "no-arena+arena-max-2": "no arena, MALLOC_ARENA_MAX=2 (glibc)",
    "shared": "one env arena for both sessions, kSameAsRequested (no release)",
    "shared+idle release (chosen)": "pipeline.sessions' options and arenas.IdleRelease",
}
ENV: dict[str, dict[str, str]] = {"no-arena+arena-max-2": {"MALLOC_ARENA_MAX": "2"}}


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.arena", description=__doc__)
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--runs", type=int, default=40, help="inference runs per measurement")
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    cli.add_argument("--variant", help=argparse.SUPPRESS)  # the child process
    args = cli.parse_args(argv)
    home = args.model_home.expanduser().resolve()
    if args.variant:
        print(json.dumps(_measure(args.variant, home, args.runs)))
        return 0
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        for name in VARIANTS:
            print(f"round {round_ + 1}/{args.rounds}: {name}", flush=True)
            rows[name].append(_child(name, home, args.runs))
    _show(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"arena-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"variants": VARIANTS, "rounds": rows}, indent=2))
    print(f"results: {path}")
    return 0


def _child(name: str, home: Path, runs: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.arena", "--variant", name, "--runs", str(runs)]
    argv += ["--model-home", str(home)]
    env = {**os.environ, **ENV.get(name, {})}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _show(rows: dict[str, list[dict[str, float]]]) -> None:
    base = statistics.median(r["per_s"] for r in rows["arena"])
    cpu_base = statistics.median(r["cpu_ms_per_run"] for r in rows["arena"])
    print(
        f"\n{'variant':30} {'idle RSS MB':>11} {'peak MB':>8} {'runs/s':>7} {'vs arena':>8} "
        f"{'CPU ms/run':>10} {'vs arena':>8} {'faults/run':>10}"
    )
    for name, results in rows.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"{name:30} {med['idle_rss_mb']:11.0f} {med['peak_mb']:8.0f} {med['per_s']:7.2f} "
            f"{med['per_s'] / base:8.3f} {med['cpu_ms_per_run']:10.0f} "
            f"{cpu_base / med['cpu_ms_per_run']:8.3f} {med['faults_per_run']:10.0f}"
        )


# --- the child: one variant ------------------------------------------------------------------


def _measure(name: str, home: Path, runs: int) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    from bench import synth

    image = Image.open(io.BytesIO(synth.make_images(1)[0]))
    narrow, wide, run_options = _sessions(name, home)
    release = _release(name, narrow, wide)
    if release is not None:
        narrow, wide = (h.inner_session for h in _release.holders)  # type: ignore[attr-defined]
    feed = {
        narrow.get_inputs()[0].name: np.asarray(
            image.convert("RGB").resize((320, 320)), dtype=np.float32
        )
        .transpose(2, 0, 1)[None]
        .copy()
        / 255
    }
    trim = _malloc_trim if name == "no-arena+trim" else (lambda: None)

    def run(session: Any, count: int) -> None:
        for _ in range(count):
            session.run(None, feed, run_options)
            trim()

    run(wide, 5)
    _threads(lambda: run(narrow, 5), 2)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    _threads(lambda: run(narrow, runs // 2), 2)
    per_s = (runs // 2 * 2) / (time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    run(wide, 3)
    time.sleep(0.5)
    if release is not None:  # the idle release: wait for it (a shrinking run and a trim)
        deadline = time.monotonic() + 60
        while release.releases == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    return {
        "idle_rss_mb": _status("VmRSS"),
        "peak_mb": _status("VmHWM"),
        "per_s": per_s,
        "cpu_ms_per_run": 1000 * cpu / (runs // 2 * 2),
        "faults_per_run": (after.ru_minflt - before.ru_minflt) / (runs // 2 * 2),
    }


def _release(name: str, narrow: Any, wide: Any) -> Any:
    """For the chosen variant: the registry's idle release around the two sessions."""
    if not name.startswith("shared+idle"):
        return None
    from playground_rt.pipeline import arenas

    release = arenas.IdleRelease(0.2)
    holders = [type("Holder", (), {"inner_session": s})() for s in (narrow, wide)]
    for holder in holders:
        release.track(holder)
    _release.holders = holders  # type: ignore[attr-defined]  # keep them alive
    return release


def _sessions(name: str, home: Path) -> tuple[Any, Any, Any]:
    import onnxruntime

    path = str(home / "u2netp.onnx")
    run_options = onnxruntime.RunOptions()
    shared = (
        name == "shared"
    )  # the chosen variant registers it through playground_rt.pipeline.arenas
    if shared:
        info = onnxruntime.OrtMemoryInfo(
            "Cpu",
            onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
            0,
            onnxruntime.OrtMemType.DEFAULT,
        )
        config = onnxruntime.OrtArenaCfg({"arena_extend_strategy": 1})
        onnxruntime.create_and_register_allocator(info, config)
    if name == "arena+shrink":
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def options(threads: int) -> onnxruntime.SessionOptions:
        if name.startswith("shared+idle"):
            from playground_rt.pipeline.sessions import _session_options

            chosen: onnxruntime.SessionOptions = _session_options(threads)
            return chosen
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if name.startswith("no-arena"):
            opts.enable_cpu_mem_arena = False
        if name == "no-arena+no-pattern":
            opts.enable_mem_pattern = False
        if shared:
            opts.add_session_config_entry("session.use_env_allocators", "1")
        return opts

    cores = len(os.sched_getaffinity(0))
    providers = ["CPUExecutionProvider"]
    narrow = onnxruntime.InferenceSession(path, options(1), providers=providers)
    wide = onnxruntime.InferenceSession(path, options(cores), providers=providers)
    return narrow, wide, run_options


def _threads(work: object, count: int) -> None:
    assert callable(work)
    pool = [threading.Thread(target=work) for _ in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def _malloc_trim() -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    raise SystemExit(main())
