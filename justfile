# playground-rt: the scripts' home. `just` lists the recipes.

set dotenv-load := false

venv := ".venv"
py := venv / "bin/python"

# list the recipes
default:
    @just --list

# create .venv and install the server with the CPU onnxruntime and the dev tools
install:
    test -x {{py}} || python3 -m venv {{venv}}
    {{py}} -m pip install -q --upgrade pip
    {{py}} -m pip install -q -e '.[cpu,dev]'

# install with onnxruntime-gpu instead (CUDA machines)
install-gpu:
    test -x {{py}} || python3 -m venv {{venv}}
    {{py}} -m pip install -q -e '.[gpu,dev]'

# put u2netp where rembg finds it (offline-capable)
models:
    {{py}} -m playground_rt.cli.main models pull

# run the server on the embedded defaults (pulls the model on first start)
serve *ARGS:
    {{py}} -m playground_rt.cli.main serve {{ARGS}}

# system packages the tests use: Debian's chromium and redis-server
system-deps:
    bash .ci/system-deps

# the whole suite (what CI runs)
test *ARGS:
    {{py}} -m pytest {{ARGS}}

# ruff and mypy --strict (src, tests, bench)
lint:
    {{venv}}/bin/ruff check src tests bench
    {{venv}}/bin/ruff format --check src tests bench
    {{venv}}/bin/mypy

# benchmarks: pipeline (raw ORT ceiling, rembg s, playground-rt), hub fan-out, browser
bench *ARGS:
    {{py}} -m playground_rt.cli.main bench {{ARGS}}

# the page's u2netp (Chromium, onnxruntime-web) against the server's; server jobs per 100 previews
bench-browser *ARGS:
    {{py}} -m bench.browser {{ARGS}}

# the size sweep: 0.3/2/12 MP, JPEG/PNG, each pipeline, server vs in-process floor, memory
bench-sweep *ARGS:
    {{py}} -m bench.sweep {{ARGS}}

# worker processes behind a remote web node against one process, and the Redis hop per job
bench-cluster *ARGS:
    {{py}} -m bench.cluster {{ARGS}}

# the speed and memory budgets that were once test assertions (bench/budgets.py)
bench-budgets *ARGS:
    {{py}} -m bench.budgets {{ARGS}}

# the cut-out and strength blend: two passes (before), one pass, one pass on every core
bench-compose *ARGS:
    {{py}} -m bench.compose {{ARGS}}

# schemathesis against /openapi.json with many examples
fuzz EXAMPLES="500":
    PLAYGROUND_FUZZ_EXAMPLES={{EXAMPLES}} {{py}} -m pytest tests/test_fuzz.py -q

# hold 200 sockets and a stream of previews (SECONDS, default 300)
load SECONDS="300":
    {{py}} -m bench.load --seconds {{SECONDS}}

# the results store at its cap: distinct images, capped vs uncapped server (PREVIEWS, default 1500)
soak-retention PREVIEWS="1500" *ARGS:
    {{py}} -m bench.retention --previews {{PREVIEWS}} {{ARGS}}

# Autobahn|Testsuite against an echo route (needs Python 2.7 via pyenv)
conformance:
    {{py}} -m bench.conformance

# rewrite the README's screenshots of the page (desktop, narrow, dark) in docs/screenshots/
screenshots:
    {{py}} -m tests.screenshots
