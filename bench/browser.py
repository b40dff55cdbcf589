"""The page's own background removal against the server's (issue 11).

Two figures, on one ``playground-rt serve`` (default split) and Debian's Chromium (headless,
WASM, the threads the page gets: it is cross-origin isolated)::

    python -m bench.browser [--quick] [--images N] [--previews N]

* **Latency at concurrency 1, same images** (``synth.photo`` at 640x480 and ~2 MP): the
  browser removes each image's background in the page (``rembg`` pipeline, the page's model
  worker; one at a time, after a warm-up run), the server runs the same request through
  ``POST /api/pipelines/fallback`` one at a time. Per image: the model step alone (browser:
  resize + ``run`` + mask, from the worker's timings; server: ``op.rembg`` from the job's
  durations) and end to end (browser: the preview shown, from the request on; server: the
  fallback answered). The ratios are browser / server (above 1: the browser is slower).
* **Server jobs per 100 previews**: the same sequence of previews (``--previews``; each image
  once, then its strength slider moved, as a user tweaks a cut-out) driven through the page,
  once with the page removing backgrounds (its defaults: measured placement, with the model
  budget set by ``--budget-ms``) and once with "Run on server" ticked (client removal off),
  each on a fresh server; the server's job counters (``/metrics``) before and after. The
  budget is lifted by default: on a machine so busy that one run takes longer than the
  page's 8 s budget, the page rightly sends everything to the server, and the figure would
  measure the machine's load instead (``--budget-ms 8000`` shows that).

The machine's load average is recorded: these figures are CPU-bound and the cores are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright
from rich.console import Console
from rich.table import Table

from . import servers, synth

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SIZES = {"640x480": (640, 480), "2MP": (1633, 1225)}
STRENGTHS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
TIMEOUT_MS = 300_000
JOBS = re.compile(r'^playground_rt_jobs_total\{outcome="(\w+)",pipeline="(\w+)"\} (\S+)$', re.M)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__)
    cli.add_argument("--quick", action="store_true", help="few images and previews: a smoke run")
    cli.add_argument("--images", type=int, help="images per size (default 4, quick 2)")
    cli.add_argument("--previews", type=int, help="previews per mode (default 100, quick 20)")
    cli.add_argument("--budget-ms", type=int, default=3_600_000, help="the page's model budget")
    cli.add_argument("--model-home", type=Path, default=Path("~/.u2net"))
    cli.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = cli.parse_args(argv)
    args.images = args.images or (2 if args.quick else 4)
    args.previews = args.previews or (20 if args.quick else 100)
    args.model_home = args.model_home.expanduser().resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results: dict[str, Any] = {"loadavg_start": list(os.getloadavg()), "cores": os.cpu_count()}
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {os.getloadavg()} at the start: figures will be noisy")
    with tempfile.TemporaryDirectory(prefix="playground-bench-browser-") as tmp:
        asyncio.run(_run(args, Path(tmp), results))
    results["loadavg_end"] = list(os.getloadavg())
    show(results)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"browser-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"saved {path}")
    return 0


async def _run(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with _server(args, work, "latency") as base:
                results["latency"] = await latency(browser, base, work, args.images)
            results["jobs"] = {}
            for mode in ("client", "server"):
                with _server(args, work, f"jobs-{mode}") as base:
                    results["jobs"][mode] = await jobs_per_previews(
                        browser, base, work, args.previews, mode, args.budget_ms
                    )
        finally:
            await browser.close()


def _server(args: argparse.Namespace, work: Path, name: str) -> Any:
    (work / name / "data").mkdir(parents=True)
    config = servers.PlaygroundConfig(  # serve's default split: one intra-op thread a worker
        workers=len(os.sched_getaffinity(0)),
        intra=1,
        outputs_root=work / name / "outputs",
        data_root=work / name / "data",
        model_home=args.model_home,
    )
    return servers.playground_server(config, work)


# --- latency at concurrency 1 -------------------------------------------------------------------


async def open_page(browser: Browser, base: str, query: str = "") -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{base}/{query}")
    await page.wait_for_function("window.playground?.rembg?.state === 'ready'")
    await page.uncheck("#auto-preview")
    return page


async def shown(page: Page, previous: str | None) -> dict[str, Any]:
    await page.wait_for_function(
        "(prev) => { const r = window.playground.result; return r && r.key !== prev && r.ms; }",
        arg=previous,
    )
    result: dict[str, Any] = await page.evaluate("window.playground.result")
    return result


async def pick(page: Page, path: Path) -> None:
    await page.set_input_files("#file-input", str(path))
    await page.wait_for_function(
        "(name) => document.getElementById('image-name').textContent.startsWith(name)",
        arg=path.name,
    )


async def browser_run(page: Page, path: Path, previous: str | None) -> tuple[dict[str, Any], Any]:
    await pick(page, path)
    await page.click("#preview-button")
    result = await shown(page, previous)
    assert result["source"] == "client-workers", result
    return result, await page.evaluate("window.playground.rembg.last")


async def latency(browser: Browser, base: str, work: Path, per_size: int) -> dict[str, Any]:
    # No budget: the browser's time is the figure, however long (a busy machine is slow).
    page = await open_page(browser, base, "?budget_ms=3600000")
    await page.select_option("#pipeline", "rembg")
    await page.uncheck("#placement-auto")  # the browser runs all of them: that is the figure
    warm = work / "warm.png"
    warm.write_bytes(synth.png(synth.photo(999, (320, 240))))
    previous = (await browser_run(page, warm, None))[0]["key"]
    figures: dict[str, Any] = {"threads": (await page.evaluate("window.playground.rembg"))}
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        await http.post("/api/pipelines/fallback", json=_fallback(warm.read_bytes()))
        for label, size in SIZES.items():
            rows = []
            for seed in range(per_size):
                path = work / f"{label}-{seed}.png"
                path.write_bytes(synth.png(synth.photo(100 + seed, size)))
                result, model = await browser_run(page, path, previous)
                previous = result["key"]
                server = await _server_run(http, path.read_bytes())
                rows.append({
                    "browser_model_ms": model["timings"]["pre"] + model["timings"]["infer"]
                    + model["timings"]["post"],
                    "browser_infer_ms": model["timings"]["infer"],
                    "browser_e2e_ms": result["ms"],
                    **server,
                })  # fmt: skip
            figures[label] = rows
    figures["threads"] = {k: figures["threads"][k] for k in ("backend", "threads")}
    await page.close()
    return figures


def _fallback(png: bytes) -> dict[str, Any]:
    return {"pipeline_id": "rembg", "image_base64": base64.b64encode(png).decode(), "params": {}}


async def _server_run(http: httpx.AsyncClient, png: bytes) -> dict[str, float]:
    started = time.perf_counter()
    answer = (await http.post("/api/pipelines/fallback", json=_fallback(png))).json()
    e2e = (time.perf_counter() - started) * 1000
    assert answer["status"] == "completed", answer
    job = (await http.get(f"/api/jobs/{answer['job_id']}")).json()
    return {"server_model_ms": job["durations"]["op.rembg"], "server_e2e_ms": e2e}


# --- server jobs per previews ---------------------------------------------------------------------


async def jobs_per_previews(
    browser: Browser, base: str, work: Path, previews: int, mode: str, budget_ms: int
) -> dict[str, Any]:
    """``previews`` previews through the page: each image, then its strength moved."""
    page = await open_page(browser, base, f"?budget_ms={budget_ms}")
    if mode == "server":
        await page.check("#run-on-server")
    await page.check("#op-rembg")
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        before = await _job_counts(http)
        started = time.perf_counter()
        previous, done, seed, where = None, 0, 0, {"client-workers": 0, "server": 0}
        while done < previews:
            path = work / f"jobs-{mode}-{seed}.png"
            path.write_bytes(synth.png(synth.photo(500 + seed)))
            await pick(page, path)
            await page.fill("#f-rembg-strength", "1")
            for strength in (None, *STRENGTHS)[: previews - done]:
                if strength is not None:
                    await page.fill("#f-rembg-strength", str(strength))
                await page.click("#preview-button")
                result = await shown(page, previous)
                previous = result["key"]
                where["server" if result["source"].startswith("server") else "client-workers"] += 1
                done += 1
            seed += 1
        wall = time.perf_counter() - started
        after = await _job_counts(http)
    await page.close()
    ran = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "previews": previews,
        "images": seed,
        "wall_s": wall,
        "server_jobs": ran,
        "shown": where,
        "budget_ms": budget_ms,
    }


async def _job_counts(http: httpx.AsyncClient) -> dict[str, float]:
    counts: dict[str, float] = {}
    for outcome, _pipeline, value in JOBS.findall((await http.get("/metrics")).text):
        counts[outcome] = counts.get(outcome, 0) + float(value)
    return counts


# --- report ------------------------------------------------------------------------------------


def _p50(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def show(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=110)
    lat = results["latency"]
    how = lat["threads"]
    table = Table(title=f"u2netp at concurrency 1: browser ({how['backend']} x {how['threads']} "
                  "threads) vs server (p50 ms)")  # fmt: skip
    for column in ("images", "browser model", "server model", "ratio", "browser e2e",
                   "server e2e", "ratio "):  # fmt: skip
        table.add_column(column, justify="right")
    for label in SIZES:
        rows = lat[label]
        bm, sm = _p50(rows, "browser_model_ms"), _p50(rows, "server_model_ms")
        be, se = _p50(rows, "browser_e2e_ms"), _p50(rows, "server_e2e_ms")
        table.add_row(f"{len(rows)} x {label}", f"{bm:.0f}", f"{sm:.0f}", f"{bm / sm:.2f}",
                      f"{be:.0f}", f"{se:.0f}", f"{be / se:.2f}")  # fmt: skip
    console.print(table)
    jobs = Table(title="server jobs per previews (same sequence through the page)")
    for column in ("client removal", "previews", "server jobs run", "cache hits", "per 100",
                   "shown from the page", "wall s"):  # fmt: skip
        jobs.add_column(column, justify="right")
    for mode, label in (("client", "on"), ("server", "off (Run on server)")):
        j = results["jobs"][mode]
        ran = j["server_jobs"].get("completed", 0)
        jobs.add_row(label, str(j["previews"]), f"{ran:.0f}",
                     f"{j['server_jobs'].get('cache_hit', 0):.0f}",
                     f"{100 * ran / j['previews']:.0f}", str(j["shown"]["client-workers"]),
                     f"{j['wall_s']:.1f}")  # fmt: skip
    console.print(jobs)
    console.print(f"load average: start {results['loadavg_start']}, end {results['loadavg_end']}")


if __name__ == "__main__":
    raise SystemExit(main())
