"""The REST surface over a real uvicorn: the seeds' examples, cache keys, routing, errors."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from playground_rt import errors
from playground_rt.hub.connection import Close
from playground_rt.jobs.job import JobState
from playground_rt.pipeline.ops import OPS, parse_params
from playground_rt.pipeline.registry import CACHE_FORMAT, PIPELINES

from .conftest import SEED_IMAGE, Server, b64, encode, sample_image

SEED_PREVIEW: dict[str, Any] = {
    "pipeline_id": "preprocessing",
    "checkpoint_path": "outputs/exp/checkpoints/epoch=12.ckpt",
    "image_base64": "<base64>",
    "image_path": "data/datasets/images/val/sample.jpg",
    "params": {"autocontrast": True, "rembg": "client", "blur": {"kernelSize": 5}},
}
SEED_FALLBACK: dict[str, Any] = {
    "pipeline_id": "rembg",
    "image_path": "data/datasets/images/val/sample.jpg",
    "params": {"strength": 0.85},
}


def seed_image_bytes(server: Server) -> bytes:
    return (server.settings.data_root / "datasets/images/val/sample.jpg").read_bytes()


async def test_seed_preview_verbatim_with_a_real_image(server: Server) -> None:
    body = dict(SEED_PREVIEW, image_base64=b64(seed_image_bytes(server)), taskId="seed-1")
    response = await server.post("/api/pipelines/preview", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "accepted"
    assert answer["routed_backend"] == "client-workers"
    assert answer["job_id"].startswith("preprocessing-")
    assert answer["cache_key"].startswith("preprocessing:")
    assert answer["taskId"] == "seed-1"
    assert any("cache_key" in note for note in answer["notes"])
    assert any("checkpoint_path is not used" in note for note in answer["notes"])


async def test_seed_preview_with_the_fallback_switch_is_a_server_cutout(server: Server) -> None:
    seed = dict(SEED_PREVIEW, image_base64=b64(seed_image_bytes(server)))
    client = (await server.post("/api/pipelines/preview", seed)).json()
    forced = dict(seed, params={**SEED_PREVIEW["params"], "background_removal": "server"})
    response = await server.post("/api/pipelines/fallback", forced)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "completed", answer
    assert answer["routed_backend"] == "server-preprocessing"
    assert answer["cache_key"] == client["cache_key"]  # placement is not in the key
    png = (await server.http.get(answer["result_url"])).content
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGBA"
        alpha = np.asarray(image.getchannel("A"))
        assert alpha.min() < 64 and alpha.max() > 192, "the background was not removed"
    job = (await server.http.get(f"/api/jobs/{answer['job_id']}")).json()
    stages = [s for s in job["durations"] if s.startswith("op.")]
    assert stages == ["op.rembg", "op.autocontrast", "op.blur"]  # after geometry, before tone


@pytest.mark.parametrize(
    ("params", "backend", "note"),
    [
        pytest.param(
            {"strength": 0.85, "background_removal": "client"}, "client-workers", "cache_key",
            id="rembg-pipeline-to-the-page",
        ),
        pytest.param({"strength": 0.85}, "server-rembg", "queued on the server", id="default"),
        pytest.param(
            {"alpha_matting": True, "background_removal": "client"}, "server-rembg",
            "alpha_matting runs on the server only", id="alpha-matting-server-only",
        ),
        pytest.param(
            {"model": "u2net", "rembg": "client"}, None, "is not in the model home", id="no-model",
        ),
    ],
)  # fmt: skip
async def test_rembg_pipeline_routing(
    server: Server, params: dict[str, Any], backend: str | None, note: str
) -> None:
    body = {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "params": params}
    response = await server.post("/api/pipelines/preview", body)
    answer = response.json()
    if backend is None:
        assert response.status_code in (404, 422, 503) and note in answer["detail"], answer
        return
    assert answer["routed_backend"] == backend, answer
    assert any(note in n for n in answer["notes"]), answer["notes"]
    if backend.startswith("server-"):  # leave nothing running for the tests after this one
        await server.http.delete(f"/api/jobs/{answer['job_id']}")
        await server.state.jobs.wait(server.state.jobs.get(answer["job_id"]), 60)


async def test_rembg_step_keys(server: Server) -> None:
    async def key(params: dict[str, Any]) -> str:
        body = {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": params}
        answer = (await server.post("/api/pipelines/preview", body)).json()
        return str(answer["cache_key"])

    # Every one routed to the page (background_removal wins), so nothing runs here.
    page = {"background_removal": "client"}
    on = {
        await key({"rembg": "client"}),
        await key({"rembg": "server", **page}),
        await key({"rembg": True, **page}),
        await key({"rembg": {"model": "u2netp", "strength": 1.0}, **page}),
    }
    off = {await key(page), await key({"rembg": False, **page})}
    assert len(on) == 1 and len(off) == 1 and on != off
    assert await key({"rembg": {"strength": 0.5}, **page}) not in on


async def test_pipelines_describe_their_shape(server: Server) -> None:
    listing = {p["id"]: p for p in (await server.http.get("/api/pipelines")).json()["pipelines"]}
    pre, flat = listing["preprocessing"], listing["rembg"]
    assert (pre["flat"], pre["routing_keys"]) == (False, ["background_removal"])
    assert (flat["flat"], flat["routing_keys"]) == (True, ["rembg", "background_removal"])
    names = [op["name"] for op in pre["ops"]]
    assert names.index("flip") < names.index("rembg") < names.index("grayscale")
    rembg = pre["ops"][names.index("rembg")]
    assert rembg["placed"] and rembg["client"] and rembg["client_models"] == ["u2netp"]
    assert not flat["ops"][0]["placed"]


async def test_pipelines_serve_what_the_page_would_otherwise_copy(server: Server) -> None:
    """The page keeps no copy of these: it reads them here, and here each comes from its
    one home in Python (limits: ``test_datasets``)."""
    listing = (await server.http.get("/api/pipelines")).json()
    constants = listing["constants"]
    assert constants["cache_format"] == CACHE_FORMAT
    assert constants["close_codes"] == {code.name: code.value for code in Close}
    switch = constants["route_switch"]
    for pipeline in PIPELINES.values():
        for route in ("client", "server"):
            assert pipeline.plan({switch: route}).route == route, (pipeline.id, route)
    assert constants["odd_params"] == {"blur": ["kernelSize"]}
    with pytest.raises(errors.InvalidParams, match="kernelSize must be odd"):
        parse_params(OPS["blur"], {"kernelSize": 6})
    for served in listing["pipelines"]:
        assert served["routing_keys"] == list(PIPELINES[served["id"]].routing)
        assert {op["name"]: op["client"] for op in served["ops"]} == {
            name: OPS[name].client for name in PIPELINES[served["id"]].ops
        }


async def test_seed_fallback_verbatim_runs_rembg_for_real(server: Server) -> None:
    response = await server.post("/api/pipelines/fallback", SEED_FALLBACK)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "completed", answer
    assert answer["routed_backend"] == "server-rembg"
    assert answer["result_path"] == f"outputs/playground/rembg/{answer['job_id']}.png"
    assert not any("not wired" in note for note in answer["notes"])
    result = server.settings.outputs_root / "playground" / "rembg" / f"{answer['job_id']}.png"
    with Image.open(result) as image:
        assert image.mode == "RGBA"
        alpha = image.getchannel("A")
        assert alpha.getextrema() == (38, 255)  # 255 - 0.85 * 255 rounds to 38: strength blends
    served = await server.http.get(answer["result_url"])
    assert served.status_code == 200 and served.content == result.read_bytes()


async def test_cache_key_is_the_same_for_base64_and_path_and_any_key_order(server: Server) -> None:
    by_path = {
        "pipeline_id": "preprocessing",
        "image_path": SEED_IMAGE,
        "params": {"blur": {"kernelSize": 3}, "autocontrast": {"cutoff": 2}},
    }
    by_bytes = {
        "params": {"autocontrast": {"cutoff": 2.0}, "blur": {"kernelSize": 3}},
        "image_base64": b64(seed_image_bytes(server)),
        "pipeline_id": "preprocessing",
    }
    first = (await server.post("/api/pipelines/preview", by_path)).json()
    second = (await server.post("/api/pipelines/preview", by_bytes)).json()
    assert first["cache_key"] == second["cache_key"]
    assert first["job_id"] == second["job_id"]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(
            {"autocontrast": True}, {"autocontrast": {"cutoff": 0}}, id="true-means-defaults"
        ),
        pytest.param({"blur": {}}, {"blur": {"kernelSize": 5}}, id="defaults-filled"),
        pytest.param(
            {"blur": True, "rembg": "client"},
            {"blur": True, "rembg": "server"},
            id="routing-ignored",
        ),
        pytest.param(
            {"grayscale": False, "flip": True},
            {"flip": {"direction": "horizontal"}},
            id="off-is-absent",
        ),
    ],
)
async def test_equivalent_params_give_one_key(
    server: Server, left: dict[str, Any], right: dict[str, Any]
) -> None:
    keys = []
    for params in (left, right):
        body = {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": params}
        keys.append((await server.post("/api/pipelines/preview", body)).json()["cache_key"])
    assert keys[0] == keys[1]


async def test_different_images_or_params_give_different_keys(server: Server) -> None:
    other = b64(encode(sample_image(seed=99)))
    bodies = [
        {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"blur": True}},
        {
            "pipeline_id": "preprocessing",
            "image_path": SEED_IMAGE,
            "params": {"blur": {"kernelSize": 7}},
        },
        {"pipeline_id": "preprocessing", "image_base64": other, "params": {"blur": True}},
        {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "params": {}},
    ]
    keys = {(await server.post("/api/pipelines/preview", b)).json()["cache_key"] for b in bodies}
    assert len(keys) == len(bodies)


async def test_server_preview_runs_and_is_then_a_cache_hit(server: Server) -> None:
    image = b64(encode(sample_image(seed=3)))
    body = {
        "pipeline_id": "preprocessing",
        "image_base64": image,
        "params": {"grayscale": True, "rembg": "server"},
        "taskId": "t-server",
    }
    first = (await server.post("/api/pipelines/preview", body)).json()
    assert first["routed_backend"] == "server-preprocessing"
    job = await server.http.get(f"/api/jobs/{first['job_id']}")
    while job.json()["state"] in ("queued", "running"):
        job = await server.http.get(f"/api/jobs/{first['job_id']}")
    assert job.json()["state"] == "completed"
    again = (await server.post("/api/pipelines/preview", body)).json()
    assert again["status"] == "completed" and again["result_url"] == job.json()["result_url"]


async def test_non_client_ops_are_routed_to_the_server(server: Server) -> None:
    body = {
        "pipeline_id": "preprocessing",
        "image_path": SEED_IMAGE,
        "params": {"equalize": True, "rembg": "client"},
    }
    answer = (await server.post("/api/pipelines/preview", body)).json()
    assert answer["routed_backend"] == "server-preprocessing"
    assert answer["server_reasons"] == ["op 'equalize' has no client worker"]
    assert any("no client worker" in note for note in answer["notes"])
    body["params"] = {"flip": True}  # the page's own work: nothing to explain
    assert "server_reasons" not in (await server.post("/api/pipelines/preview", body)).json()


async def test_pipelines_list_their_ops_with_typed_params(server: Server) -> None:
    listing = (await server.http.get("/api/pipelines")).json()
    pipelines = {p["id"]: p for p in listing["pipelines"]}
    assert set(pipelines) == {"preprocessing", "rembg"}
    blur = next(op for op in pipelines["preprocessing"]["ops"] if op["name"] == "blur")
    kernel = blur["params_schema"]["$defs"]["BlurParams"]["properties"]["kernelSize"]
    assert (kernel["minimum"], kernel["maximum"], kernel["default"]) == (1, 31, 5)
    assert blur["client"] is True
    assert "sha256" in listing["canonical_form"]


async def test_health_readiness_metrics_and_openapi(server: Server) -> None:
    assert (await server.http.get("/healthz")).json() == {"status": "ok"}
    ready = (await server.http.get("/readyz")).json()
    assert ready["ready"] is True
    assert ready["models"][0]["model"] == "u2netp"
    assert "CPUExecutionProvider" in ready["models"][0]["providers"]
    metrics = (await server.http.get("/metrics")).text
    assert "playground_rt_queue_depth" in metrics
    spec = (await server.http.get("/openapi.json")).json()
    assert "/api/pipelines/preview" in spec["paths"]
    assert "PipelineRequest" in spec["components"]["schemas"]


async def test_client_telemetry_is_accepted_and_exported(server: Server) -> None:
    report = {"taskId": "tele-1", "queue_depth": 3, "running": 2, "durations_ms": {"blur": 4.5}}
    assert (await server.post("/api/metrics", report)).status_code == 202
    assert (
        'playground_rt_client_queue_depth{source="client-workers"} 3.0'
        in (await server.http.get("/metrics")).text
    )


async def test_client_model_timings_reach_metrics(server: Server) -> None:
    model = {"backend": "wasm", "threads": 2, "infer_ms": 690.0, "runs": 3}
    report = {"source": "tele-model", "models": {"u2netp": model, "isnet-anime": model}}
    assert (await server.post("/api/metrics", report)).status_code == 202
    metrics = (await server.http.get("/metrics")).text
    labels = 'backend="wasm",model="u2netp",source="tele-model"'
    assert f"playground_rt_client_inference_seconds{{{labels}}} 0.69" in metrics
    assert f"playground_rt_client_inference_runs{{{labels}}} 3.0" in metrics
    assert "isnet-anime" not in metrics  # only models pages run: the labels stay bounded
    snapshot = server.state.telemetry.snapshot().clients
    assert any(r.models.get("u2netp") for r in snapshot.values())
    bad = {"models": {"u2netp": {"backend": "cuda"}}}
    assert (await server.post("/api/metrics", bad)).status_code == 422


async def test_datasets_page_lists_images_under_the_data_root(server: Server) -> None:
    page = (await server.http.get("/api/datasets", params={"limit": 10})).json()
    assert page["total"] >= 1 and page["items"][0]["path"] == SEED_IMAGE


async def test_results_do_not_escape_their_root(server: Server) -> None:
    response = await server.http.get("/results/../../etc/passwd")
    assert response.status_code == 404


def _big_png() -> bytes:
    return encode(Image.new("RGB", (5000, 4000)))


JSON = {"content-type": "application/json"}
BAD_INPUTS = [
    pytest.param(b"{", 400, "malformed JSON", id="malformed-json"),
    pytest.param(
        {"pipeline_id": "preprocessing"}, 422, "one of image_base64 and image_path", id="no-image"
    ),
    pytest.param({"image_path": SEED_IMAGE}, 422, "pipeline_id", id="missing-pipeline"),
    pytest.param(
        {"pipeline_id": "nope", "image_path": SEED_IMAGE},
        404,
        "unknown pipeline_id",
        id="unknown-pipeline",
    ),
    pytest.param(
        {"pipeline_id": "Bad Id!", "image_path": SEED_IMAGE},
        422,
        "$.pipeline_id",
        id="bad-pipeline-id",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "extra": 1},
        422,
        "extra",
        id="unknown-field",
    ),
    pytest.param(
        {
            "pipeline_id": "preprocessing",
            "image_path": SEED_IMAGE,
            "params": {"blur": {"kernelSize": 99}},
        },
        422,
        "$.params.blur.kernelSize",
        id="kernel-too-big",
    ),
    pytest.param(
        {
            "pipeline_id": "preprocessing",
            "image_path": SEED_IMAGE,
            "params": {"blur": {"kernelSize": 4}},
        },
        422,
        "odd",
        id="kernel-even",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"warp": True}},
        422,
        "warp",
        id="unknown-op",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"rembg": "gpu"}},
        422,
        "$.params.rembg",
        id="bad-routing",
    ),
    pytest.param(
        {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "params": {"strength": 2}},
        422,
        "$.params.strength",
        id="strength-out-of-range",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"blur": "big"}},
        422,
        "$.params.blur",
        id="wrong-type",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_base64": "not base64!!"},
        400,
        "base64",
        id="bad-base64",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_base64": b64(b"hello, not an image")},
        422,
        "not an image",
        id="not-an-image",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_base64": b64(encode(sample_image())[:200])},
        422,
        "could not be decoded",
        id="truncated-png",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_base64": b64(encode(sample_image(), "TIFF"))},
        422,
        "allowed format",
        id="tiff-not-allowed",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_base64": b64(_big_png())},
        413,
        "max_pixels",
        id="too-many-pixels",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": "data/../../etc/passwd"},
        422,
        "'..'",
        id="path-dotdot",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": "/etc/passwd"},
        422,
        "relative",
        id="path-absolute",
    ),
    pytest.param(
        {"pipeline_id": "preprocessing", "image_path": "data/nope.png"},
        404,
        "does not exist",
        id="missing-image",
    ),
    pytest.param(
        {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "checkpoint_path": "outputs/exp/m.ckpt"},
        422,
        "export it to ONNX",
        id="ckpt-needs-onnx",
    ),
    pytest.param(
        {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "params": {"model": "u2net"}},
        422,
        "pull",
        id="model-file-missing",
    ),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD_INPUTS)
async def test_bad_input_is_a_clear_4xx(
    server: Server, body: Any, status: int, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else None
    if content is None:
        response = await server.post("/api/pipelines/fallback", body)
    else:
        response = await server.http.post("/api/pipelines/fallback", content=content, headers=JSON)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]


async def test_symlink_out_of_the_data_root_is_refused(server: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode(sample_image()))
    link = server.settings.data_root / "escape.png"
    os.symlink(secret, link)
    body = {"pipeline_id": "preprocessing", "image_path": "data/escape.png"}
    response = await server.post("/api/pipelines/fallback", body)
    assert response.status_code == 422 and "outside its root" in response.json()["detail"]


async def test_oversize_body_is_413_with_and_without_content_length(tmp_path: Path) -> None:
    from .conftest import make_settings, running

    async with running(make_settings(tmp_path, max_body_bytes=4096, preload_models=[])) as srv:
        big = b"{" + b" " * 10_000 + b"}"
        response = await srv.http.post("/api/pipelines/preview", content=big, headers=JSON)
        assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 1000

        response = await srv.http.post("/api/pipelines/preview", content=chunks(), headers=JSON)
        assert response.status_code == 413 and "max_body_bytes" in response.json()["detail"]


async def test_nothing_is_written_for_refused_requests(server: Server) -> None:
    async with asyncio.timeout(30):  # jobs of earlier tests on this server write first
        while server.state.jobs.active:
            await asyncio.sleep(0.02)
    before = sorted(server.settings.outputs_root.rglob("*"))
    for body, _, _ in (p.values for p in BAD_INPUTS):
        payload = body if isinstance(body, bytes) else None
        if payload is None:
            await server.post("/api/pipelines/fallback", body)
    assert sorted(server.settings.outputs_root.rglob("*")) == before


async def test_job_state_machine_refuses_illegal_moves(server: Server) -> None:
    body = {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"flip": True}}
    answer = (await server.post("/api/pipelines/fallback", body)).json()
    job = server.state.jobs.get(answer["job_id"])
    assert job.state is JobState.COMPLETED
    with pytest.raises(RuntimeError, match="illegal transition"):
        job.move(JobState.RUNNING)


async def test_dataset_file_serves_image_bytes_under_the_root_only(server: Server) -> None:
    response = await server.http.get("/api/datasets/file", params={"path": SEED_IMAGE})
    assert response.status_code == 200
    assert response.content == seed_image_bytes(server)
    assert response.headers["content-type"] == "image/jpeg"
    for bad, status in (
        ("data/../../etc/passwd", 422),
        ("/etc/passwd", 422),
        ("data/nope.png", 404),
    ):
        refused = await server.http.get("/api/datasets/file", params={"path": bad})
        assert refused.status_code == status and refused.json()["detail"]


async def test_a_token_protects_the_api_by_header_or_query(tmp_path: Path) -> None:
    from .conftest import make_settings, running

    body = {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, "params": {"flip": True}}
    async with running(make_settings(tmp_path, token="s3cret", preload_models=[])) as srv:
        refused = await srv.post("/api/pipelines/preview", body)
        assert refused.status_code == 401 and "token" in refused.json()["detail"]
        wrong = await srv.post(
            "/api/pipelines/preview", body, headers={"authorization": "Bearer no"}
        )
        assert wrong.status_code == 401
        by_header = await srv.post(
            "/api/pipelines/preview", body, headers={"authorization": "Bearer s3cret"}
        )
        assert by_header.status_code == 200
        by_query = await srv.post("/api/pipelines/preview", body, params={"token": "s3cret"})
        assert by_query.status_code == 200
        assert (await srv.http.get("/healthz")).status_code == 200  # probes stay open
