"""Figures, ratios against the targets, the printed tables and the JSON record.

Targets (issue 3): playground-rt at concurrency 8 reaches >= 0.95x the raw ceiling and
>= 1.35x ``rembg s``; a cache hit's p99 is <= 5 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from .ceiling import Throughput
from .httpload import Run

TARGET_RAW = 0.95
TARGET_REMBG = 1.35
TARGET_CACHE_P99_MS = 5.0
CACHE_VARIANTS = ("image_base64", "image_path")  # the others are reference points


def best_ms(work: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` calls of ``work``, in milliseconds of wall time."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 3)


@dataclass
class HttpFigure:
    server: str
    config: str
    concurrency: int
    images: int
    per_s: float
    p50_ms: float
    p99_ms: float
    failures: int

    @classmethod
    def of(cls, server: str, config: str, run: Run) -> HttpFigure:
        return cls(
            server,
            config,
            run.concurrency,
            len(run.latencies_s),
            run.per_s,
            round(run.percentile_ms(0.5), 1),
            round(run.percentile_ms(0.99), 1),
            len(run.failures),
        )


@dataclass
class Stages:
    """Mean ms per job stage (the job view's ``durations``) and what the client saw."""

    config: str
    concurrency: int
    client_ms: float
    outside_job_ms: float
    """Client latency minus the job's ``total``: HTTP, JSON, base64, hashing, routing."""
    stages: dict[str, float]

    @classmethod
    def of(cls, config: str, run: Run, stage_ms: dict[str, list[float]]) -> Stages:
        means = {k: round(sum(v) / len(v), 2) for k, v in stage_ms.items() if v}
        client = 1000 * sum(run.latencies_s) / len(run.latencies_s)
        outside = client - means.get("total", 0.0)
        return cls(config, run.concurrency, round(client, 2), round(outside, 2), means)


@dataclass
class CacheFigure:
    config: str
    variant: str
    requests: int
    misses: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def of(cls, config: str, variant: str, run: Run, misses: int) -> CacheFigure:
        mean = 1000 * sum(run.latencies_s) / len(run.latencies_s)
        p50, p99 = run.percentile_ms(0.5), run.percentile_ms(0.99)
        return cls(config, variant, len(run.latencies_s), misses, p50, p99, mean)


@dataclass
class Ratio:
    name: str
    value: float | None
    target: float | None  # None: for information only
    verdict: str  # PASS, FAIL, info or n/a


@dataclass
class Results:
    meta: dict[str, object]
    raw: list[Throughput] = field(default_factory=list)
    library: list[Throughput] = field(default_factory=list)
    anatomy: dict[str, float] = field(default_factory=dict)
    http: list[HttpFigure] = field(default_factory=list)
    stages: list[Stages] = field(default_factory=list)
    cache: list[CacheFigure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Wrong answers (failures, misses, unexpected cache hits): the run is invalid."""
    warnings: list[str] = field(default_factory=list)
    """Signs of a disturbed measurement (a busy machine): the figures are unreliable."""
    recommended: str | None = None
    ratios: list[Ratio] = field(default_factory=list)

    def add(
        self,
        http: list[HttpFigure],
        stages: list[Stages],
        cache: list[CacheFigure],
        problems: list[str],
    ) -> None:
        """Record the server figures, pick the recommended split and compute the ratios."""
        self.http, self.stages, self.cache, self.problems = http, stages, cache, problems
        ours = [f for f in http if f.server == "playground-rt" and f.concurrency == 8]
        if ours:
            self.recommended = max(ours, key=lambda f: f.per_s).config
        self.ratios = self._ratios()

    def _find(self, server: str, concurrency: int) -> float | None:
        config = self.recommended if server == "playground-rt" else None
        for figure in self.http:
            hit = figure.server == server and figure.concurrency == concurrency
            if hit and (config is None or figure.config == config):
                return figure.per_s
        return None

    def _ratios(self) -> list[Ratio]:
        c8, c1 = self._find("playground-rt", 8), self._find("playground-rt", 1)
        raw = max((t.per_s for t in self.raw), default=None)
        lib = max((t.per_s for t in self.library), default=None)
        ratios = [
            _ratio("playground-rt c8 / raw ceiling", c8, raw, TARGET_RAW),
            _ratio("playground-rt c8 / library ceiling", c8, lib, None),
            _ratio("playground-rt c8 / rembg s c8", c8, self._find("rembg s", 8), TARGET_REMBG),
            _ratio("playground-rt c1 / rembg s c1", c1, self._find("rembg s", 1), None),
        ]
        for figure in self.cache:
            if figure.config == self.recommended and figure.variant in CACHE_VARIANTS:
                ok = figure.p99_ms <= TARGET_CACHE_P99_MS and not figure.misses
                name = f"cache hit p99 ms ({figure.variant}), <= {TARGET_CACHE_P99_MS:g}"
                ratios.append(Ratio(name, figure.p99_ms, None, "PASS" if ok else "FAIL"))
        return ratios


def _ratio(name: str, top: float | None, bottom: float | None, target: float | None) -> Ratio:
    if top is None or not bottom:
        return Ratio(name, None, target, "n/a")
    value = top / bottom
    if target is None:
        return Ratio(name, value, None, "info")
    return Ratio(f"{name}, >= {target:g}", value, target, "PASS" if value >= target else "FAIL")


def save(results: Results, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(asdict(results)), indent=2))
    return path


# --- printing -----------------------------------------------------------------------------


def show(results: Results, console: Console | None = None) -> None:
    # Not a terminal (a log, CI): wide enough that no column is cut.
    console = console or Console(width=None if Console().is_terminal else 150)
    meta = results.meta
    console.print(
        f"\n[bold]pipeline benchmark[/] on {meta['cores']} cores ({meta['cpu']}), "
        f"load average {meta['loadavg_start']} -> {meta.get('loadavg_end')}, "
        f"{meta['images']} images{' (quick)' if meta['quick'] else ''}"
    )
    for table in (_throughput(results), _stages(results), _anatomy(results), _cache(results)):
        console.print(table)
    console.print(_ratios(results))
    if results.recommended:
        console.print(
            f"recommended split (best at concurrency 8): {results.recommended} "
            "(workers x intra-op threads)"
        )
    for warning in results.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for problem in results.problems:
        console.print(f"[red]problem:[/] {problem}")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < 2 else "right")
    return table


def _throughput(results: Results) -> Table:
    table = _table("throughput", "what", "split", "conc.", "images", "img/s", "p50 ms", "p99 ms")
    for name, rows in (("raw ceiling", results.raw), ("library ceiling", results.library)):
        for t in rows:
            threads = t.split.partition("x")[0]
            table.add_row(name, t.split, threads, str(t.images), f"{t.per_s:.2f}", "", "")
    for f in results.http:
        table.add_row(
            f.server,
            f.config,
            str(f.concurrency),
            str(f.images),
            f"{f.per_s:.2f}",
            f"{f.p50_ms:.0f}",
            f"{f.p99_ms:.0f}",
        )
    return table


def _stages(results: Results) -> Table:
    names = sorted({k for s in results.stages for k in s.stages}, key=_stage_order)
    table = _table(
        "playground-rt stages, mean ms", "split", "conc.", "client", "outside job", *names
    )
    for s in results.stages:
        cells = [f"{s.stages.get(n, 0.0):.1f}" for n in names]
        table.add_row(
            s.config, str(s.concurrency), f"{s.client_ms:.1f}", f"{s.outside_job_ms:.1f}", *cells
        )
    return table


def _stage_order(name: str) -> int:
    order = ("queue", "decode", "op.rembg", "ops", "encode", "write", "total")
    return order.index(name) if name in order else len(order)


def _anatomy(results: Results) -> Table:
    title = "rembg steps behind the library ceiling, mean ms"
    table = _table(title, "model", "threads", *results.anatomy)
    table.add_row("u2netp", "1 x 1", *(f"{v:.1f}" for v in results.anatomy.values()))
    return table


def _cache(results: Results) -> Table:
    table = _table(
        "cache hits (/api/pipelines/preview, concurrency 1)",
        "split",
        "body",
        "requests",
        "misses",
        "p50 ms",
        "p99 ms",
        "mean ms",
    )
    for c in results.cache:
        table.add_row(
            c.config,
            c.variant,
            str(c.requests),
            str(c.misses),
            f"{c.p50_ms:.2f}",
            f"{c.p99_ms:.2f}",
            f"{c.mean_ms:.2f}",
        )
    return table


def _ratios(results: Results) -> Table:
    table = _table("ratios and targets", "", "value", "verdict")
    colours = {"PASS": "green", "FAIL": "red"}
    for r in results.ratios:
        value = "n/a" if r.value is None else f"{r.value:.2f}"
        verdict = r.verdict
        if verdict in colours:
            verdict = f"[{colours[verdict]}]{verdict}[/]"
        table.add_row(r.name, value, verdict)
    return table
