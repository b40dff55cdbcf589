"""All configuration in one object.

Precedence: command-line flags, then ``PLAYGROUND_*`` environment variables, then the
defaults below. Every field is documented where it is declared; ``playground-rt serve
--help`` and the README's configuration table are made from the same names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

MiB = 1024 * 1024

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

WsImpl = Literal["wsproto", "websockets", "websockets-sansio"]
Execute = Literal["local", "remote"]


def cores() -> int:
    """The CPUs this process may run on (its affinity), the unit of every default split."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Server settings (see the README's configuration table)."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    data_root: Path = Path("data")
    """Where ``image_path`` resolves; nothing outside it is ever read."""
    outputs_root: Path = Path("outputs")
    """Results go to ``{outputs_root}/playground``; ``checkpoint_path`` resolves here."""
    model_home: Path = Path("~/.u2net")
    """Where rembg finds its ``.onnx`` files (exported as ``U2NET_HOME``)."""
    static_dir: Path | None = None
    """The single-page app; ``None`` means the ``static/`` folder of this checkout."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 32 * MiB
    max_image_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 20 * MiB
    max_pixels: Annotated[int, msgspec.Meta(ge=1)] = 16_800_000
    """Decoded-size ceiling, checked from the header before any pixel is decoded."""
    workers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    """Executor threads; 0 picks ``cores // intra_op_threads``."""
    intra_op_threads: Annotated[int, msgspec.Meta(ge=0, le=64)] = 1
    """onnxruntime threads per session run; workers x this never exceeds the cores."""
    adaptive_threads: bool = True
    """A job alone in the pool runs its model on every core (workers x intra-op threads);
    results are bit-identical, a lone user just waits less."""
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 64
    """Jobs waiting beyond this get 429 + Retry-After."""
    mask_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 256 * MiB
    """Memory for the model's masks kept between jobs (one byte per pixel: 12 MB for a 12 MP
    image), so a change of strength, only_mask, bgcolor or post_process_mask on an image seen
    before skips inference; least recently used evicted first; 0 keeps none."""
    decoded_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * MiB
    """Memory for decoded images kept between jobs on the same bytes (4 bytes per pixel: 8 MB
    for 2 MP, 48 MB for 12 MP), so a new job on an image seen before skips decoding; least
    recently used evicted first, room made (and given back to the system) before a new
    image is decoded; 0 keeps none. The default keeps one 12 MP photo or eight of 2 MP."""
    client_queue_share: Annotated[int, msgspec.Meta(ge=0)] = 16
    """Queued jobs one client (remote address) may hold; past it 429 ``client_queue_full``
    while others still get in. 0 turns the share off."""
    job_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    """Budget of one job's ops; past it the job fails (the worker finishes the op in hand)."""
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 5.0
    """On SIGTERM, how long running jobs may finish before they are cancelled."""
    fallback_wait_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 60.0
    """How long ``/api/pipelines/fallback`` waits for the result before answering ``accepted``."""
    preload_models: list[str] = msgspec.field(default_factory=lambda: ["u2netp"])
    pull_models: bool = True
    """``serve`` pulls missing preload models at start-up (offline-capable, see README)."""
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    """Origins allowed to open sockets and make CORS requests; empty = same origin only
    (an origin whose host is one of ``allowed_hosts`` and the request's own ``Host``)."""
    allowed_hosts: list[str] = msgspec.field(default_factory=lambda: list(LOCAL_HOSTS))
    """Host names a request's ``Host`` header may carry (any port); others get 421, and a
    WebSocket handshake 403, which defeats DNS rebinding. The bound ``host`` is always
    allowed unless it is a wildcard; ``*.example.org`` allows subdomains, ``*`` anything
    (behind a proxy that checks ``Host`` itself)."""
    token: str | None = None
    """When set, the API and sockets require ``Authorization: Bearer <token>`` (or ``?token=``)."""
    broker: str | None = None
    """``redis://host:port/db`` fans the hub out through Redis; ``None`` keeps it in memory."""
    execute: Execute = "local"
    """Where server jobs run: ``local`` in this process's executor, ``remote`` on
    ``playground-rt worker`` processes through the broker's Redis Streams (``cluster``)."""
    claim_idle_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Workers: a job whose worker has not renewed its claim for this long is taken over by
    another worker (a running job's claim is renewed every third of it)."""
    max_deliveries: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    """Workers: a job handed out this many times without finishing (its workers died) goes
    to the dead-letter stream and fails."""
    history_frames: Annotated[int, msgspec.Meta(ge=100)] = 10_000
    """Remote mode: job frames the cluster keeps in Redis for ``resume`` on any node."""
    history_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    """Remote mode: how long those frames (and a finished job's record) are kept."""
    require_gpu: bool = False
    """Workers: refuse to start unless the models run on onnxruntime's CUDA provider."""
    commands_catalog: Path | None = None
    """A TOML file of extra CLI commands for ``/api/commands/build``."""
    save_uploads: bool = True
    """The page may save an uploaded image under ``{data_root}/uploads/`` (named by its
    content's hash), so the command it shows runs as it is."""
    uploads_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 1024 * MiB
    """Total size the saved uploads may reach; past it saving answers 413."""
    results_max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Bytes the results under ``{outputs_root}/playground`` may hold (results written by
    ``playground-rt run`` there count too); the least recently used go first. 0 picks
    min(2 GiB, half of the free disk space at start-up plus what results already hold)."""
    results_max_age_s: Annotated[float, msgspec.Meta(ge=0)] = 7 * 24 * 3600.0
    """A result nobody used (wrote, hit or fetched) for this long is removed; 0: no limit."""
    thumbnail_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * MiB
    """Dataset thumbnails kept under ``{outputs_root}/thumbnails`` (oldest dropped first)."""
    http_header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A request's head (request line and headers) must arrive within this many seconds of
    the connection opening (or of the previous answer); else the connection is closed."""
    http_body_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """A request's body must arrive within this many seconds of its head (408 and close);
    a 32 MiB body thus needs about 1.1 MB/s."""
    ws_max_connections: Annotated[int, msgspec.Meta(ge=1)] = 2000
    ws_max_frame_bytes: Annotated[int, msgspec.Meta(ge=256)] = 64 * 1024
    ws_send_queue: Annotated[int, msgspec.Meta(ge=4)] = 256
    ws_send_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    ws_ping_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    ws_impl: WsImpl = "wsproto"
    telemetry_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def results_root(self) -> Path:
        return self.outputs_root / "playground"

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        return max(1, cores() // max(1, self.intra_op_threads))

    @property
    def wide_threads(self) -> int:
        """Threads of the all-cores session, or 0 when there is nothing to widen."""
        total = self.worker_count * max(1, self.intra_op_threads)
        return total if self.adaptive_threads and total > max(1, self.intra_op_threads) else 0

    def job_threads(self, alone: bool) -> int:
        """Threads one job's model, per-pixel passes and deflate use: every core the workers
        share (``wide_threads``) when it is ``alone`` in the pool, else one."""
        return max(1, self.wide_threads) if alone else 1

    @property
    def trusted_hosts(self) -> list[str]:
        """``allowed_hosts``, plus the bound ``host`` when it names one interface."""
        hosts = list(self.allowed_hosts)
        if self.host not in WILDCARD_HOSTS and self.host not in hosts:
            hosts.append(self.host)
        return hosts

    def resolved_static_dir(self) -> Path:
        if self.static_dir is not None:
            return self.static_dir
        return Path(__file__).resolve().parents[2] / "static"


_LIST_FIELDS = {"preload_models", "allowed_origins", "allowed_hosts"}


def _path(kind: type, value: object) -> object:
    """msgspec makes no ``Path`` from a ``str`` (``PLAYGROUND_DATA_ROOT=...``)."""
    if kind is Path and isinstance(value, str | os.PathLike):
        return Path(value)
    raise TypeError(f"cannot convert {value!r} to {kind.__name__}")


def from_env(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Build settings from ``PLAYGROUND_<FIELD>`` variables, then ``overrides`` (CLI flags).

    Lists are comma-separated; an invalid value raises ``msgspec.ValidationError`` naming
    the variable's field.
    """
    raw: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        value = environ.get(f"PLAYGROUND_{name.upper()}")
        if value is None:
            continue
        raw[name] = (
            [v.strip() for v in value.split(",") if v.strip()] if name in _LIST_FIELDS else value
        )
    raw.update({k: v for k, v in overrides.items() if v is not None})
    settings = msgspec.convert(raw, Settings, strict=False, dec_hook=_path)
    settings.model_home = settings.model_home.expanduser()
    return settings
