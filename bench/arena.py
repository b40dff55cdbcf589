"""onnxruntime memory options: idle RSS against inference throughput, one process per variant.

The server holds two u2netp sessions (one of 1 intra-op thread shared by the two workers, one
on every core for a lone job: ``playground_rt.models``). Each variant builds that pair with
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
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VARIANTS: dict[str, str] = {
    "arena": "onnxruntime's defaults: CPU arena and memory patterns on (before this change)",
    "arena+shrink": "arena on, run option memory.enable_memory_arena_shrinkage=cpu:0",
    "arena+same-as-requested": "one env arena, kSameAsRequested, shared by both sessions",
    "no-arena": "enable_cpu_mem_arena=False (memory patterns on)",
    "no-arena+no-pattern": "enable_cpu_mem_arena=False, enable_mem_pattern=False",
    "no-arena+trim": "no arena; malloc_trim(0) after each run",
    "lean (chosen)": "playground_rt.models' options: no arena, memory patterns on",
}
ENV: dict[str, dict[str, str]] = {"no-arena+arena-max-2": {"MALLOC_ARENA_MAX": "2"}}
VARIANTS["no-arena+arena-max-2"] = "no arena, MALLOC_ARENA_MAX=2 (glibc)"


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
    print(f"\n{'variant':28} {'idle RSS MB':>12} {'peak MB':>8} {'runs/s':>8} {'vs arena':>9}")
    for name, results in rows.items():
        idle = statistics.median(r["idle_rss_mb"] for r in results)
        peak = statistics.median(r["peak_mb"] for r in results)
        per_s = statistics.median(r["per_s"] for r in results)
        print(f"{name:28} {idle:12.0f} {peak:8.0f} {per_s:8.2f} {per_s / base:9.3f}")


# --- the child: one variant ------------------------------------------------------------------


def _measure(name: str, home: Path, runs: int) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    from bench import synth

    image = Image.open(io.BytesIO(synth.make_images(1)[0]))
    narrow, wide, run_options = _sessions(name, home)
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
    started = time.perf_counter()
    _threads(lambda: run(narrow, runs // 2), 2)
    per_s = (runs // 2 * 2) / (time.perf_counter() - started)
    run(wide, 3)
    time.sleep(0.5)
    return {"idle_rss_mb": _status("VmRSS"), "peak_mb": _status("VmHWM"), "per_s": per_s}


def _sessions(name: str, home: Path) -> tuple[Any, Any, Any]:
    import onnxruntime

    path = str(home / "u2netp.onnx")
    run_options = onnxruntime.RunOptions()
    shared = name == "arena+same-as-requested"
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
        if name == "lean (chosen)":
            from playground_rt.models import _session_options

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
