"""Figures about the server and the page's workers: Prometheus metrics and telemetry frames.

Each app has its own ``CollectorRegistry`` (no process globals, so several apps in one
test process don't collide). Client reports (``POST /api/metrics``, ``telemetry`` frames)
are kept per source for ``CLIENT_TTL_S`` and re-broadcast inside telemetry frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from playground_rt import schemas
from playground_rt.jobs.executor import Stats
from playground_rt.jobs.job import JobEvent, Submission
from playground_rt.pipeline.ops.background import CLIENT_MODELS
from playground_rt.pipeline.registry import split_job_id

CLIENT_TTL_S = 30.0
MAX_CLIENTS = 256
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)


class Telemetry:
    def __init__(
        self,
        stats: Stats,
        cluster: Callable[[], list[schemas.WorkerStatus]] | None = None,
        results: Callable[[], schemas.ResultsHeld] | None = None,
    ) -> None:
        self.stats = stats
        self.cluster = cluster
        """Remote mode: the live workers (``stats`` is then the cluster's)."""
        self.results = results
        """The results folder against its bounds (``Retention.figures``), read when asked."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_total = Counter(
            "playground_rt_jobs",
            "Jobs that ended, by pipeline and outcome.",
            ["pipeline", "outcome"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "playground_rt_job_stage_seconds",
            "Time per job stage.",
            ["pipeline", "stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("playground_rt_queue_depth", "Jobs waiting.", registry=r)
        self.running = Gauge("playground_rt_jobs_running", "Jobs on a worker.", registry=r)
        self.rejections = Counter(
            "playground_rt_rejections", "Refused requests.", ["reason"], registry=r
        )
        self.cache_requests = Counter(
            "playground_rt_cache_requests", "Cache lookups.", ["result"], registry=r
        )
        self.ws_connections = Gauge("playground_rt_ws_connections", "Open sockets.", registry=r)
        self.ws_frames = Counter("playground_rt_ws_frames", "Frames sent.", ["type"], registry=r)
        self.ws_dropped = Counter(
            "playground_rt_ws_dropped", "Frames dropped.", ["reason"], registry=r
        )
        self.client_queue_depth = Gauge(
            "playground_rt_client_queue_depth",
            "Queue depth reported by page workers.",
            ["source"],
            registry=r,
        )
        self.client_inference = Gauge(
            "playground_rt_client_inference_seconds",
            "Mean model run time measured in the page (onnxruntime-web), by model and backend.",
            ["source", "model", "backend"],
            registry=r,
        )
        self.client_inference_runs = Gauge(
            "playground_rt_client_inference_runs",
            "Model runs the page reported (its own count since it loaded).",
            ["source", "model", "backend"],
            registry=r,
        )
        self.session_info = Gauge(
            "playground_rt_onnx_session_info",
            "Loaded ONNX sessions.",
            ["model", "provider"],
            registry=r,
        )
        self.results_bytes = Gauge(
            "playground_rt_results_bytes", "Bytes the results folder holds.", registry=r
        )
        self.results_files = Gauge(
            "playground_rt_results_files", "Results in the results folder.", registry=r
        )
        self.results_max_bytes = Gauge(
            "playground_rt_results_max_bytes", "The results folder's cap.", registry=r
        )
        self.results_evictions = Counter(
            "playground_rt_results_evictions",
            "Results removed by retention, by reason (bytes, age, disk_full).",
            ["reason"],
            registry=r,
        )
        self._evictions_seen: dict[str, int] = {}
        self._clients: dict[str, tuple[float, schemas.MetricsReport]] = {}

    def job_event(self, event: JobEvent) -> None:
        """Listener on the job manager: counts outcomes and stage times."""
        frame = event.frame
        if event.withdrawn:  # one follower's notice, not the job's outcome
            return
        if isinstance(frame, schemas.Completed):
            pipeline, _ = split_job_id(frame.job_id)
            self.jobs_total.labels(pipeline, "cache_hit" if frame.cache_hit else "completed").inc()
            self.cache_requests.labels("hit" if frame.cache_hit else "miss").inc()
            for stage, ms in frame.durations.items():
                self.stage_seconds.labels(pipeline, stage).observe(ms / 1000)
        elif isinstance(frame, schemas.Failed | schemas.Cancelled):
            outcome = "failed" if isinstance(frame, schemas.Failed) else "cancelled"
            self.jobs_total.labels(split_job_id(frame.job_id)[0], outcome).inc()

    def submitted(self, submission: Submission) -> None:
        if submission.joined:
            self.cache_requests.labels("coalesced").inc()

    def client_report(self, report: schemas.MetricsReport) -> None:
        key = f"{report.source}:{report.taskId or '-'}"
        if key not in self._clients and len(self._clients) >= MAX_CLIENTS:
            self._expire(force=True)
        self._clients[key] = (time.monotonic(), report)
        self.client_queue_depth.labels(report.source).set(report.queue_depth)
        for model, figures in report.models.items():
            if model not in CLIENT_MODELS:  # labels stay bounded: only models pages can run
                continue
            labels = (report.source, model, figures.backend)
            self.client_inference_runs.labels(*labels).set(figures.runs)
            if figures.infer_ms is not None:
                self.client_inference.labels(*labels).set(figures.infer_ms / 1000)

    def _expire(self, force: bool = False) -> None:
        now = time.monotonic()
        for key, (seen, _) in list(self._clients.items()):
            if now - seen > CLIENT_TTL_S:
                self._forget(key)
        if force and len(self._clients) >= MAX_CLIENTS:
            self._forget(min(self._clients, key=lambda k: self._clients[k][0]))

    def _forget(self, key: str) -> None:
        """Drop a client, and its source's series once no client reports under it: ``source``
        is client-chosen, so series must not outlive the bounded table."""
        _, report = self._clients.pop(key)
        if all(r.source != report.source for _, r in self._clients.values()):
            with contextlib.suppress(KeyError):
                self.client_queue_depth.remove(report.source)
            for model, figures in report.models.items():
                for gauge in (self.client_inference, self.client_inference_runs):
                    with contextlib.suppress(KeyError):
                        gauge.remove(report.source, model, figures.backend)

    def snapshot(self) -> schemas.Telemetry:
        """The current figures as a ``telemetry`` frame (seq/epoch filled by the hub).

        It goes to every ``telemetry`` subscriber, so it never carries a taskId: reports that
        named one are keyed by a hash of it instead.
        """
        self._expire()
        return schemas.Telemetry(
            queue_depth=self.stats.queue_depth,
            running=self.stats.running,
            workers=self.stats.workers,
            durations_ms={k: round(v * 1000, 3) for k, v in self.stats.durations_s.items()},
            clients=dict(_redacted(key, report) for key, (_, report) in self._clients.items()),
            cluster=self.cluster() if self.cluster is not None else [],
            results=self.results() if self.results is not None else None,
        )

    def prometheus(self) -> bytes:
        self.queue_depth.set(self.stats.queue_depth)
        self.running.set(self.stats.running)
        if self.results is not None:
            self._export_results(self.results())
        return generate_latest(self.registry)

    def _export_results(self, held: schemas.ResultsHeld) -> None:
        self.results_bytes.set(held.bytes)
        self.results_files.set(held.files)
        self.results_max_bytes.set(held.max_bytes)
        for reason, count in held.evictions.items():  # retention counts; the counter follows
            self.results_evictions.labels(reason).inc(count - self._evictions_seen.get(reason, 0))
            self._evictions_seen[reason] = count


def _redacted(key: str, report: schemas.MetricsReport) -> tuple[str, schemas.MetricsReport]:
    if report.taskId is None:
        return key, report
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return f"{report.source}:{digest}", msgspec.structs.replace(report, taskId=None)
