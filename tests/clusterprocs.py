"""A cluster of real processes for ``test_cluster``: a private ``redis-server``, web nodes
(``playground-rt serve`` with ``PLAYGROUND_EXECUTE=remote``) and ``playground-rt worker``s,
all sharing one outputs folder, each with its own log, each started here and always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from playground_rt.jobs.cluster import wire

from .conftest import MODEL_HOME, make_settings, require_model
from .procserver import Redis, command, environment, free_port, serve_command, spawn, stop

START_TIMEOUT_S = 90.0


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        stop(self.proc)


@dataclass
class Cluster:
    root: Path
    redis: Redis
    client: aioredis.Redis
    settings: dict[str, Any]
    web: dict[str, Proc] = field(default_factory=dict)
    workers: dict[str, Proc] = field(default_factory=dict)

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    def start_web(self, name: str) -> Proc:
        port = free_port()
        env = environment(execute="remote", broker=self.redis.url, **self.settings)
        log = self.root / f"web-{name}.log"
        proc = Proc(name, spawn(serve_command(self.root, port), log, env), log)
        proc.url = f"http://127.0.0.1:{port}"
        self.web[name] = proc
        return proc

    def start_worker(self, name: str) -> Proc:
        argv = command(
            "worker",
            *("--name", name, "--outputs-root", str(self.outputs)),
            *("--model-home", str(MODEL_HOME), "--workers", "1", "--intra-op-threads", "1"),
        )
        log = self.root / f"worker-{name}.log"
        env = environment(broker=self.redis.url, **self.settings)
        proc = Proc(name, spawn(argv, log, env), log)
        self.workers[name] = proc
        return proc

    async def ready(self, proc: Proc) -> None:
        """A web node answers ``/readyz`` 200; a worker's heartbeat is in Redis."""
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            while time.monotonic() < deadline:
                if proc.proc.poll() is not None:
                    raise AssertionError(f"{proc.name} exited:\n{proc.output()}")
                if proc.url:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(proc.url + "/readyz")).status_code == 200:
                            return
                elif await self.client.exists(wire.worker_key(proc.name)):
                    return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{proc.name} not ready after {START_TIMEOUT_S:g} s")

    async def job(self, job_id: str) -> dict[str, str]:
        """The job's record in Redis (empty once expired or never there)."""
        fields: dict[Any, Any] = await self.client.hgetall(wire.job_key(job_id))
        return {k.decode(): v.decode() for k, v in fields.items()}

    async def history(self, job_id: str) -> list[wire.HistoryEntry]:
        """Every frame of ``job_id`` still in the cluster's history, in order."""
        entries: Any = await self.client.xrange(wire.HISTORY)
        found = [wire.decode_history(i, f) for i, f in entries]
        return [e for e in found if e.frame.job_id == job_id]

    def stop(self) -> None:
        for proc in [*self.web.values(), *self.workers.values()]:
            proc.kill()


@contextlib.asynccontextmanager
async def cluster(
    root: Path, web: list[str], workers: list[str], **settings: Any
) -> AsyncIterator[Cluster]:
    """Redis, then every web node and worker at once (their start-up is mostly imports)."""
    require_model()
    make_settings(root)  # plants the seed image under root/data
    redis = Redis(root)
    await redis.start()
    client = aioredis.from_url(redis.url)
    found = Cluster(root, redis, client, settings)
    try:
        procs = [found.start_web(n) for n in web] + [found.start_worker(n) for n in workers]
        await asyncio.gather(*(found.ready(p) for p in procs))
        yield found
    finally:
        found.stop()
        await client.aclose()
        redis.stop()
