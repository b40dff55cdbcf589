"""``just soak-retention`` / ``playground-rt bench retention``: the results store at its cap.

Two runs of ``playground-rt serve`` (a subprocess each, one after the other, fresh outputs
folders, the same data folder): one with ``--results-max-bytes`` at ``--cap`` (default 4 MiB),
one with a cap it never reaches (1 TiB), so the cost of retention is a ratio measured in
the same sitting. Each run sends the same ``--previews`` previews from ``--clients`` clients
(one socket each, subscribed to its taskId, one preview in flight: ``bench.load``'s
``LoadClient``): a server-run ``flip`` of ``--image-size`` noise PNGs (they do not compress,
so results are as big as they look) by ``image_path``, every one a new image except a
``--repeat`` share that asks again for an earlier one (a cache hit, or a recompute once it was
evicted). Each completed result is fetched (``GET /results/...``) as the page would.

Reported per run: previews and outcomes, terminal frames expected / lost / duplicated (both
must be 0), result fetches that met a 404, REST p50/p99 and terminal-frame p99, the results
folder's bytes sampled every ``SAMPLE_EVERY_S`` (max against cap + the largest result), how
many times the cap's worth was written, evictions (from ``/metrics``), the server's RSS at
the start (after an untimed warm-up) and the end. Then the ratio of REST p99s, capped over
uncapped. ``--json PATH`` writes it all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from . import servers
from .load import JSON, MODEL_HOME, LoadClient, Stats, connect_clients, percentile, rss_kib

PREVIEWS = 1500
CLIENTS = 8
CAP = 4 << 20
UNCAPPED = 1 << 40
IMAGE_SIZE = (128, 96)
REPEAT = 0.2
SAMPLE_EVERY_S = 0.1
WARM_PREVIEWS = 20


def make_images(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    """``n`` distinct noise PNGs under ``folder`` (the server's data root); their paths as
    a request names them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    names = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:05d}.png", compress_level=1)
        names.append(f"data/soak/{i:05d}.png")
    return names


def workload(images: list[str], previews: int, repeat: float, seed: int) -> list[str]:
    """Which image each preview asks for: new ones in order, a ``repeat`` share earlier ones."""
    rng, order, fresh = random.Random(seed), [], 0
    for _ in range(previews):
        if fresh and rng.random() < repeat:
            order.append(images[rng.randrange(fresh)])
        else:
            order.append(images[fresh])
            fresh += 1
    return order


def body(image: str, task_id: str) -> bytes:
    params = {"flip": True, "background_removal": "server"}
    request = {"pipeline_id": "preprocessing", "image_path": image, "params": params}
    return json.dumps({**request, "taskId": task_id}).encode()


@contextlib.contextmanager
def server(data: Path, outputs: Path, cap: int, log: Path) -> Iterator[tuple[str, int]]:
    port = servers.free_port()
    argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
    argv += ["--data-root", str(data), "--outputs-root", str(outputs), "--no-pull"]
    argv += ["--model-home", str(MODEL_HOME), "--log-level", "warning"]
    argv += ["--results-max-bytes", str(cap)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env["PLAYGROUND_PRELOAD_MODELS"] = ""  # no model: the soak is about the results folder
    base = f"http://127.0.0.1:{port}"
    with servers.running(argv, env, log, base + "/readyz") as proc:
        yield base, proc.pid


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Disk:
    """The results folder's size over a run."""

    root: Path
    samples: int = 0
    max_bytes: int = 0
    largest: int = 0

    def sample(self) -> None:
        sizes = [p.stat().st_size for p in self.root.glob("*/*.png") if _whole(p)]
        self.samples += 1
        self.max_bytes = max(self.max_bytes, sum(sizes))
        self.largest = max([self.largest, *sizes])

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


def _whole(path: Path) -> bool:
    """A result, not a temp file (and not one removed since the listing)."""
    return not path.name.startswith(".tmp-") and path.exists()


async def drive(
    http: httpx.AsyncClient, clients: list[LoadClient], order: list[str]
) -> tuple[int, int]:
    """Send ``order``'s previews, each client one at a time; fetch every completed result.
    How many fetches there were and how many met a 404."""
    queue = list(reversed(order))
    fetched, missing = 0, 0

    async def one(client: LoadClient) -> None:
        nonlocal fetched, missing
        while queue:
            await client.preview(http, "preview", body(queue.pop(), client.task_id))
            if not client.waiting:
                continue
            job_id = max(client.waiting, key=lambda j: client.waiting[j][-1])  # this one's
            answer = await http.get(f"/results/preprocessing/{job_id}.png")
            fetched += 1
            missing += answer.status_code == 404

    await asyncio.gather(*(one(client) for client in clients))
    return fetched, missing


async def run_once(
    args: argparse.Namespace,
    base: str,
    pid: int,
    images: tuple[list[str], list[str]],
    results: Path,
) -> dict[str, Any]:
    """One server's run: ``images`` are the warm-up's and the measured previews'."""
    warm, order = images
    stats, disk, stop = Stats(), Disk(results), asyncio.Event()
    ws_url = base.replace("http", "ws", 1) + "/ws"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for image in warm:  # untimed: first allocations, not growth
            await http.post("/api/pipelines/fallback", content=body(image, "warm"), headers=JSON)
        clients = await connect_clients(ws_url, args.clients, stats)
        readers = [asyncio.create_task(c.read()) for c in clients]
        readers += [asyncio.create_task(c.keepalive()) for c in clients]  # the hub drops silence
        rss_start = rss_kib(pid)
        watcher = asyncio.create_task(disk.watch(stop))
        started = time.monotonic()
        fetched, missing = await drive(http, clients, order)
        elapsed = time.monotonic() - started
        stop.set()
        await watcher
        rss_end = rss_kib(pid)
        metrics = (await http.get("/metrics")).text
        for client in clients:
            client.settle()
            with contextlib.suppress(Exception):
                await client.ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return report(stats, disk, metrics, elapsed, (rss_start, rss_end), (fetched, missing))


def report(
    stats: Stats,
    disk: Disk,
    metrics: str,
    elapsed: float,
    rss: tuple[int, int],
    fetches: tuple[int, int],
) -> dict[str, Any]:
    evictions = {
        m[1]: int(float(m[2]))
        for m in re.finditer(r'results_evictions_total\{reason="(\w+)"\} (\S+)', metrics)
    }
    written = re.search(r"playground_rt_jobs_total\{.*outcome=\"completed\".*\} (\S+)", metrics)
    return {
        "seconds": round(elapsed, 1),
        "previews": sum(stats.outcomes.values()),
        "outcomes": dict(sorted(stats.outcomes.items())),
        "results_written": int(float(written[1])) if written else 0,
        "terminal_frames_expected": stats.expected,
        "terminal_frames_lost": len(stats.lost),
        "terminal_frames_duplicated": stats.duplicates,
        "sockets_closed_by_server": dict(stats.socket_closes),
        "result_fetches": fetches[0],
        "result_fetches_404": fetches[1],
        "rest_ms": {
            "p50": round(percentile(stats.rest_s, 0.50), 2),
            "p99": round(percentile(stats.rest_s, 0.99), 2),
        },
        "terminal_frame_ms_p99": round(percentile(stats.terminal_s, 0.99), 1),
        "disk": {
            "max_bytes": disk.max_bytes,
            "largest_result": disk.largest,
            "samples": disk.samples,
        },
        "evictions": evictions,
        "rss_kib": {"start": rss[0], "end": rss[1]},
    }


# --- both runs -------------------------------------------------------------------------------


def soak(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    images = make_images(root / "data" / "soak", args.previews + WARM_PREVIEWS, args.image_size)
    warm, fresh = images[args.previews :], images[: args.previews]
    order = workload(fresh, args.previews, args.repeat, args.seed)
    result: dict[str, Any] = {"cap": args.cap, "previews": args.previews}
    for label, cap in (("capped", args.cap), ("uncapped", UNCAPPED)):
        outputs = root / f"outputs-{label}"
        with server(root / "data", outputs, cap, root / f"{label}.log") as (base, pid):
            run = asyncio.run(run_once(args, base, pid, (warm, order), outputs / "playground"))
        run["server_tracebacks"] = (root / f"{label}.log").read_text().count("Traceback")
        result[label] = run
    capped, uncapped = result["capped"], result["uncapped"]
    disk = capped["disk"]
    result["cap_bound_held"] = disk["max_bytes"] <= args.cap + disk["largest_result"]
    result["caps_written"] = round(capped["results_written"] * disk["largest_result"] / args.cap, 1)
    result["rest_p99_ratio"] = round(capped["rest_ms"]["p99"] / uncapped["rest_ms"]["p99"], 2)
    return result


def show(result: dict[str, Any]) -> None:
    cap = result["cap"]
    for label in ("capped", "uncapped"):
        run = result[label]
        disk, rss = run["disk"], run["rss_kib"]
        print(f"{label}: {run['previews']} previews in {run['seconds']} s; {run['outcomes']}")
        print(
            f"  terminal frames: expected {run['terminal_frames_expected']}, lost "
            f"{run['terminal_frames_lost']}, duplicated {run['terminal_frames_duplicated']}; "
            f"result fetches {run['result_fetches']}, 404 {run['result_fetches_404']}; sockets "
            f"closed by the server {run['sockets_closed_by_server'] or 'none'}"
        )
        print(
            f"  REST ms p50 {run['rest_ms']['p50']} p99 {run['rest_ms']['p99']}; terminal "
            f"frame p99 {run['terminal_frame_ms_p99']} ms; results written "
            f"{run['results_written']}; evictions {run['evictions'] or 'none'}"
        )
        print(
            f"  results folder max {disk['max_bytes'] / 2**20:.2f} MiB ({disk['samples']} "
            f"samples; largest result {disk['largest_result'] / 1024:.1f} KiB); RSS "
            f"{rss['start'] / 1024:.1f} -> {rss['end'] / 1024:.1f} MiB; server tracebacks "
            f"{run['server_tracebacks']}"
        )
    print(
        f"cap {cap / 2**20:.2f} MiB, written {result['caps_written']}x over; disk <= cap + one "
        f"result: {result['cap_bound_held']}; REST p99 capped/uncapped "
        f"{result['rest_p99_ratio']}"
    )


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench.retention", description=__doc__.split("\n\n")[0])
    cli.add_argument("--previews", type=int, default=PREVIEWS)
    cli.add_argument("--clients", type=int, default=CLIENTS)
    cli.add_argument("--cap", type=int, default=CAP, help="results_max_bytes of the capped run")
    cli.add_argument("--repeat", type=float, default=REPEAT, help="share of repeated images")
    cli.add_argument("--image-size", type=_size, default=IMAGE_SIZE, help="WxH of the images")
    cli.add_argument("--seed", type=int, default=7)
    cli.add_argument("--quick", action="store_true", help="300 previews, a 1 MiB cap")
    cli.add_argument("--json", type=Path, help="write the figures here as well")
    args = cli.parse_args(argv)
    if args.quick:
        args.previews, args.cap = 300, 1 << 20
    with tempfile.TemporaryDirectory(prefix="playground-soak-") as tmp:
        result = soak(args, Path(tmp))
    show(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    runs = (result["capped"], result["uncapped"])
    lost = any(
        r["terminal_frames_lost"]
        or r["terminal_frames_duplicated"]
        or r["sockets_closed_by_server"]
        for r in runs
    )
    crashed = any(r["server_tracebacks"] for r in runs)
    return 0 if result["cap_bound_held"] and not lost and not crashed else 1


if __name__ == "__main__":
    raise SystemExit(main())
