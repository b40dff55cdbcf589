"""``just conformance``: the Autobahn|Testsuite against an echo route on each uvicorn
WebSocket implementation the server can run on (``Settings.ws_impl``).

The echo app is a tiny Starlette app built here (the product has no echo route): one
``WebSocketRoute`` that sends every message back as it came, served by a real uvicorn in a
subprocess per implementation (``wsproto``, ``websockets``, ``websockets-sansio``). One
``wstest -m fuzzingclient`` run then drives all three with cases 1.* to 7.* (framing,
pings, fragmentation, UTF-8, closing); 9.* (performance) and 12.*/13.* (compression) are
left out for time. The report counts each implementation's outcomes and the tracebacks
its server logged, and is written to ``.conformance/summary.json`` and printed as a table.

The testsuite runs on Python 2.7 only. It is installed once with
``pip install --target .conformance/py27 autobahntestsuite`` by the Python 2.7 named by
``$PYTHON27`` (default: pyenv's 2.7.18); without one the recipe says so and exits 2.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".conformance"
TARGET = WORK / "py27"
PYTHON27 = Path(os.environ.get("PYTHON27", "/root/.pyenv/versions/2.7.18/bin/python"))
IMPLS = ("wsproto", "websockets", "websockets-sansio")
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*"]
START_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 1800.0
# wstest imports twisted and the namespace package ``zope``: ``site.addsitedir`` processes
# the ``.pth`` files that ``pip install --target`` leaves (a plain PYTHONPATH does not).
WSTEST = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); "
    "from autobahntestsuite import wstest; sys.argv[0] = 'wstest'; wstest.run()"
)


# --- the echo server (runs in the subprocess) ---------------------------------------------


def echo_app() -> Starlette:
    async def echo(websocket: WebSocket) -> None:
        # A send after the peer's close is the app's to absorb (as the hub does), so what the
        # server log shows is what the implementation itself logs.
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message.get("bytes") or b"")
            except WebSocketDisconnect:
                return

    return Starlette(routes=[WebSocketRoute("/", echo)])


def serve(impl: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        echo_app(),
        host="127.0.0.1",
        port=port,
        ws=impl,
        log_level="warning",
        lifespan="off",
    )


# --- the driver -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_testsuite() -> bool:
    if (TARGET / "autobahntestsuite").is_dir():
        return True
    if not PYTHON27.is_file():
        print(f"no Python 2.7 at {PYTHON27} (set PYTHON27): the testsuite needs it")
        return False
    WORK.mkdir(exist_ok=True)
    print(f"installing autobahntestsuite into {TARGET} (once)")
    pip = [str(PYTHON27), "-m", "pip", "install", "-q", "--target", str(TARGET)]
    subprocess.run([*pip, "autobahntestsuite"], check=True)
    return True


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"echo server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"echo server on port {port} did not start")


@contextlib.contextmanager
def echo_servers(impls: Sequence[str], logs: Path) -> Iterator[dict[str, int]]:
    procs: list[subprocess.Popen[bytes]] = []
    ports = {impl: free_port() for impl in impls}
    try:
        for impl, port in ports.items():
            log = (logs / f"server-{impl}.log").open("wb")
            cmd = [sys.executable, "-m", "bench.conformance", "--serve", impl, "--port", str(port)]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for proc, port in zip(procs, ports.values(), strict=True):
            wait_listening(port, proc)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_wstest(ports: dict[str, int], cases: list[str], out: Path) -> None:
    spec = {
        "outdir": str(out / "reports"),
        "servers": [
            {"agent": impl, "url": f"ws://127.0.0.1:{port}/"} for impl, port in ports.items()
        ],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = out / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [str(PYTHON27), "-c", WSTEST, str(TARGET), "-m", "fuzzingclient", "-s", str(spec_path)]
    with (out / "wstest.log").open("wb") as log:
        subprocess.run(cmd, cwd=out, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)


def summarize(out: Path, impls: Sequence[str]) -> dict[str, dict[str, object]]:
    index = json.loads((out / "reports" / "index.json").read_text())
    summary: dict[str, dict[str, object]] = {}
    for impl in impls:
        results = index.get(impl, {})
        behaviour = collections.Counter(r["behavior"] for r in results.values())
        failed = sorted(
            (case for case, r in results.items() if r["behavior"] in ("FAILED", "UNIMPLEMENTED")),
            key=lambda c: [int(p) for p in c.split(".")],
        )
        log = (out / f"server-{impl}.log").read_text(errors="replace")
        summary[impl] = {
            "cases": len(results),
            "behaviour": dict(behaviour),
            "failed": failed,
            "tracebacks_logged": log.count("Traceback (most recent call last)"),
        }
    return summary


def table(summary: dict[str, dict[str, object]]) -> str:
    kinds = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
    lines = [
        "| implementation | cases | " + " | ".join(kinds) + " | tracebacks logged | failed cases |",
        "|---" * (len(kinds) + 4) + "|",
    ]
    for impl, row in summary.items():
        behaviour = row["behaviour"]
        assert isinstance(behaviour, dict)
        failed = row["failed"]
        assert isinstance(failed, list)
        counts = " | ".join(str(behaviour.get(k, 0)) for k in kinds)
        shown = ", ".join(failed[:8]) + (" ..." if len(failed) > 8 else "") or "none"
        lines.append(
            f"| {impl} | {row['cases']} | {counts} | {row['tracebacks_logged']} | {shown} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench.conformance", description=__doc__)
    cli.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    cli.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    cli.add_argument("--impl", action="append", choices=IMPLS, help="only these (repeatable)")
    cli.add_argument("--cases", nargs="+", default=CASES, help="Autobahn case patterns")
    args = cli.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if not ensure_testsuite():
        return 2
    impls = tuple(args.impl or IMPLS)
    out = WORK / "run"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    with echo_servers(impls, out) as ports:
        run_wstest(ports, list(args.cases), out)
    summary = summarize(out, impls)
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Autobahn cases {' '.join(args.cases)} in {time.monotonic() - started:.0f} s")
    print(table(summary))
    print(f"reports: {out / 'reports' / 'index.html'}")
    return 0 if all(not row["failed"] for row in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
