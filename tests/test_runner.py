"""``playground-rt run``: the drawer's command writes the server's bytes; folders and failures."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from playground_rt.cli.run import add_arguments, prepare, process

from .conftest import (
    MODEL_HOME,
    SEED_IMAGE,
    Server,
    encode,
    make_settings,
    require_model,
    sample_image,
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``playground-rt ARGS`` in a fresh process, without the caller's PLAYGROUND_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    env["COLUMNS"] = "200"  # rich's tables on a pipe: keep each row on one line
    return subprocess.run(
        [sys.executable, "-m", "playground_rt.cli.main", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("pipeline_id", "params"),
    [
        pytest.param(
            "preprocessing", {"autocontrast": True, "rembg": "client", "blur": {"kernelSize": 5}},
            id="autocontrast+blur",
        ),
        pytest.param(
            "preprocessing", {"resize": {"width": 40}, "grayscale": {"keep_alpha": False}},
            id="resize+grayscale",
        ),
        pytest.param("rembg", {"strength": 0.85}, id="rembg-0.85"),
        pytest.param(
            "rembg", {"strength": 0.3333333, "bgcolor": [0, 0, 255, 255]},
            id="rembg-exact-params",
        ),
    ],
)  # fmt: skip
async def test_drawer_command_writes_the_servers_bytes(
    server: Server, tmp_path: Path, pipeline_id: str, params: dict[str, Any]
) -> None:
    require_model()
    request = {"pipeline_id": pipeline_id, "image_path": SEED_IMAGE, "params": params}
    await reproduce(server, request, tmp_path)


async def test_drawer_command_with_a_checkpoint_writes_the_servers_bytes(
    server: Server, tmp_path: Path
) -> None:
    require_model()
    checkpoint = server.settings.outputs_root / "exp" / "checkpoints" / "u2netp-copy.onnx"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODEL_HOME / "u2netp.onnx", checkpoint)
    request = {
        "pipeline_id": "rembg",
        "image_path": SEED_IMAGE,
        "checkpoint_path": "outputs/exp/checkpoints/u2netp-copy.onnx",
        "params": {"strength": 0.5},
    }
    argv = await reproduce(server, request, tmp_path)
    # the server's roots are absolute here, so the command names the file as the server resolved it
    assert argv[argv.index("--checkpoint") + 1] == str(checkpoint)


async def reproduce(server: Server, request: dict[str, Any], out: Path) -> list[str]:
    """Run ``request`` on the server, then the drawer's command for it; same bytes, same key."""
    done = await server.post("/api/pipelines/fallback", request)
    assert done.status_code == 200, done.text
    answer = done.json()
    assert answer["status"] == "completed", answer
    served = server.settings.outputs_root.parent / answer["result_path"]

    built = await server.post(
        "/api/commands/build", {"preview": request, "values": {"out": str(out)}}
    )
    assert built.status_code == 200, built.text
    argv: list[str] = built.json()["argv"]
    assert shlex.split(built.json()["command"]) == argv
    assert argv[:2] == ["playground-rt", "run"]

    cwd = server.settings.data_root.parent  # the server's working directory, as far as paths go
    result = await asyncio.to_thread(cli, *argv[1:], cwd=cwd)
    assert result.returncode == 0, result.stderr
    written = cwd / result.stdout.strip()
    pipeline_id = request["pipeline_id"]
    assert written == out / "playground" / pipeline_id / f"{answer['job_id']}.png"
    assert written.read_bytes() == served.read_bytes()
    return argv


def counts(stderr: str) -> dict[str, int]:
    rows = re.findall(r"\b(done|cached|failed)\W+(\d+)\b", stderr)
    return {name: int(number) for name, number in rows}


def test_folder_run_reports_failures_and_reuses_results(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    (images / "a.png").write_bytes(encode(sample_image(seed=1)))
    (images / "b.jpg").write_bytes(encode(sample_image(seed=2), "JPEG"))
    (images / "nested" / "c.webp").write_bytes(encode(sample_image(seed=3), "WEBP"))
    (images / "broken.png").write_bytes(b"this is not an image")
    (images / "notes.txt").write_text("not an image: skipped")
    args = ("run", "--pipeline", "preprocessing", "--image", "images", "--out", "out",
            "--params", '{"equalize": true}', "--workers", "2")  # fmt: skip

    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert counts(first.stderr) == {"done": 3, "cached": 0, "failed": 1}
    assert re.search(r"broken\.png\W+image is not an image in an allowed format", first.stderr)
    written = first.stdout.split()
    assert len(written) == 3 and all((tmp_path / p).is_file() for p in written)
    assert all(p.startswith("out/playground/preprocessing/preprocessing-") for p in written)

    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 1
    assert counts(second.stderr) == {"done": 0, "cached": 3, "failed": 1}
    assert second.stdout == first.stdout

    (images / "broken.png").unlink()
    third = cli(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert counts(third.stderr) == {"done": 0, "cached": 3, "failed": 0}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(("--params", '{"blur": {"kernelSize": 4}}'), "kernelSize must be odd",
                     id="bad-params"),
        pytest.param(("--params", "[1]"), "--params must be a JSON object", id="not-an-object"),
        pytest.param(("--image", "missing.png"), "--image missing.png: no such file",
                     id="missing-image"),
    ],
)  # fmt: skip
def test_unusable_arguments_exit_2(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    (tmp_path / "a.png").write_bytes(encode(sample_image()))
    result = cli("run", "--pipeline", "preprocessing", "--image", "a.png", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_bench_names_every_benchmark_and_refuses_others() -> None:
    """``playground-rt bench`` takes the names bench/main.py knows (budgets among them)."""
    refused = cli("bench", "nosuch", cwd=Path(__file__).resolve().parents[1])
    assert refused.returncode == 2
    assert "'budgets'" in refused.stderr and "'sweep'" in refused.stderr


def test_one_image_at_a_time_runs_on_every_core_and_writes_the_same_bytes(tmp_path: Path) -> None:
    """As the server gives a job alone in its pool every core: a run of a single image uses
    them for the model, the per-pixel passes and the deflate; a folder on several workers, one
    thread per image. Same bytes."""
    require_model()
    source = tmp_path / "big.jpg"
    source.write_bytes(encode(sample_image(1400, 1000, seed=12), "JPEG"))  # > one band
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--pipeline", "rembg", "--image", str(source)])
    args.params = '{"strength": 0.7}'
    written = {}
    for alone in (True, False):
        settings = make_settings(tmp_path / str(alone), workers=2, intra_op_threads=1)
        recipe = prepare(args, settings, alone=alone)
        assert recipe.threads == (2 if alone else 1)
        result = process(recipe, source)
        assert result.outcome == "done" and result.path is not None, result.detail
        written[alone] = result.path.read_bytes()
    assert written[True] == written[False]
