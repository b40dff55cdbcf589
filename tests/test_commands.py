"""The command catalog and builder: validation, shell safety, previews, user catalogs."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from playground_rt import errors, schemas
from playground_rt.commands.builder import RUN_COMMAND, UPLOADED_IMAGE, Catalog, CatalogError
from playground_rt.pipeline import registry

from .conftest import SEED_IMAGE, Server, make_settings, running

EXAMPLE_CATALOG = Path(__file__).resolve().parents[1] / "examples" / "train_catalog.toml"
SEED_PARAMS: dict[str, Any] = {"autocontrast": True, "rembg": "client", "blur": {"kernelSize": 5}}
SEED_COMMAND = (
    "playground-rt run --pipeline preprocessing --image data/datasets/images/val/sample.jpg "
    """--params '{"autocontrast":{"cutoff":0},"blur":{"kernelSize":5},"rembg":{"""
    '"alpha_matting":false,"alpha_matting_background_threshold":10,'
    '"alpha_matting_erode_size":10,"alpha_matting_foreground_threshold":240,"bgcolor":null,'
    """"model":"u2netp","only_mask":false,"post_process_mask":false,"strength":1}}'"""
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(EXAMPLE_CATALOG)


def build(catalog: Catalog, **request: Any) -> schemas.CommandBuildResponse:
    response = catalog.build(schemas.CommandBuildRequest(**request))
    assert shlex.split(response.command) == response.argv
    return response


def preview(**fields: Any) -> schemas.PipelineRequest:
    return schemas.PipelineRequest(**{"pipeline_id": "preprocessing", **fields})


# --- the built-in catalog and previews ----------------------------------------------------------


def test_builtin_catalog_lists_the_run_command_first() -> None:
    (run,) = Catalog.load(None).describe().commands
    assert (run.id, run.program, run.subcommand) == (RUN_COMMAND, "playground-rt", "run")
    options = {o.name: o for o in run.options}
    assert options["pipeline"].choices == sorted(registry.PIPELINES)
    assert options["pipeline"].required and options["image"].required


def test_seed_preview_command_is_the_readme_one(
    catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the roots are relative: data/ is looked up here
    seed = preview(
        image_path=SEED_IMAGE,
        checkpoint_path="outputs/exp/checkpoints/epoch=12.ckpt",
        params=SEED_PARAMS,
    )
    response = build(catalog, preview=seed)
    assert response.command == SEED_COMMAND
    assert response.warnings == [
        "preview.image_path: 'data/datasets/images/val/sample.jpg' does not exist under the "
        "data root",
        "preview.checkpoint_path is not used by pipeline 'preprocessing'; left out",
    ]


@pytest.mark.parametrize(
    ("pipeline_id", "params"),
    [
        pytest.param("preprocessing", SEED_PARAMS, id="autocontrast+blur"),
        pytest.param("preprocessing", {"resize": {"width": 40}, "grayscale": True}, id="resize"),
        pytest.param("rembg", {"strength": 0.85, "background_removal": "client"}, id="rembg"),
        pytest.param("rembg", {"strength": 0.1234567}, id="more-than-six-decimals"),
    ],
)
def test_params_reproduce_the_previews_plan_and_cache_key(
    catalog: Catalog, pipeline_id: str, params: dict[str, Any]
) -> None:
    argv = build(
        catalog, preview=preview(pipeline_id=pipeline_id, image_path="x.png", params=params)
    ).argv
    given = json.loads(argv[argv.index("--params") + 1])
    pipeline = registry.get_pipeline(pipeline_id)
    original, rerun = pipeline.plan(params), pipeline.plan(given)
    assert rerun.steps == original.steps
    assert registry.digest(rerun, "0" * 64) == registry.digest(original, "0" * 64)


def test_default_params_are_left_out(catalog: Catalog) -> None:
    for pipeline_id in registry.PIPELINES:
        argv = build(catalog, preview=preview(pipeline_id=pipeline_id, image_path="x.png")).argv
        assert argv == ["playground-rt", "run", "--pipeline", pipeline_id, "--image", "data/x.png"]


def test_uploaded_preview_uses_a_placeholder(catalog: Catalog) -> None:
    response = build(catalog, preview=preview(image_base64="aGk=", image_path=SEED_IMAGE))
    assert response.argv[-2:] == ["--image", UPLOADED_IMAGE]
    assert any("uploaded" in w for w in response.warnings)


def test_preview_paths_follow_the_server_roots(tmp_path: Path) -> None:
    data, outputs = tmp_path / "data", tmp_path / "outputs"
    (data / "val").mkdir(parents=True)
    (data / "val" / "a.png").write_bytes(b"")
    (outputs / "exp").mkdir(parents=True)
    (outputs / "exp" / "m.onnx").write_bytes(b"")
    catalog = Catalog.load(None, data_root=data, outputs_root=outputs)
    request = preview(
        pipeline_id="rembg", image_path="data/val/a.png", checkpoint_path="exp/m.onnx"
    )
    response = build(catalog, preview=request, values={"workers": "2"})
    assert response.argv[4:] == [
        "--image", str(data / "val" / "a.png"),
        "--checkpoint", str(outputs / "exp" / "m.onnx"),
        "--workers", "2",
    ]  # fmt: skip
    assert response.warnings == []


@pytest.mark.parametrize(
    ("request_fields", "error", "detail"),
    [
        pytest.param(
            {"preview": preview(image_path="x.png", params={"blur": {"kernelSize": 4}})},
            errors.InvalidParams, "$.params.blur", id="bad-params",
        ),
        pytest.param(
            {"preview": preview(image_path="x.png", params={"blurr": True})},
            errors.InvalidParams, "blurr", id="unknown-op",
        ),
        pytest.param(
            {"preview": preview(pipeline_id="nope", image_path="x.png")},
            errors.NotFound, "unknown pipeline_id 'nope'", id="unknown-pipeline",
        ),
        pytest.param(
            {"preview": preview(image_path="../etc/passwd")},
            errors.PathOutsideRoot, "preview.image_path", id="image-outside-root",
        ),
        pytest.param(
            {"preview": preview(image_path="/etc/passwd")},
            errors.PathOutsideRoot, "preview.image_path", id="absolute-image",
        ),
        pytest.param(
            {"preview": preview(pipeline_id="rembg", image_path="x.png", checkpoint_path="e.ckpt")},
            errors.InvalidParams, "PyTorch checkpoint; export it to ONNX", id="pytorch-checkpoint",
        ),
        pytest.param(
            {"preview": preview()},
            errors.InvalidParams, "one of image_base64 and image_path", id="no-image",
        ),
        pytest.param(
            {"preview": preview(image_path="x.png"), "values": {"image": "y.png"}},
            errors.InvalidParams, "values.image: set by the preview", id="preview-and-value",
        ),
        pytest.param(
            {"command": "train", "preview": preview(image_path="x.png")},
            errors.InvalidParams, "only 'playground-rt run' reproduces", id="not-run",
        ),
        pytest.param(
            {"command": "deploy"}, errors.NotFound, "unknown command 'deploy'", id="unknown-cmd",
        ),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(
    catalog: Catalog, request_fields: dict[str, Any], error: type[Exception], detail: str
) -> None:
    with pytest.raises(error) as raised:
        build(catalog, **request_fields)
    assert isinstance(raised.value, errors.PlaygroundError)
    assert detail in raised.value.detail


# --- values ---------------------------------------------------------------------------------


def test_user_command_builds_in_catalog_order(catalog: Catalog) -> None:
    values = {
        "run_name": "exp 1", "amp": True, "augment": "false", "device": "cpu", "lr": "3e-4",
        "epochs": "20", "checkpoint": "outputs/exp/checkpoints/last.ckpt", "data": "datasets",
    }  # fmt: skip
    response = build(catalog, command="train", values=values)
    assert response.argv == [
        "python", "train.py", "--data", "data/datasets",
        "--checkpoint", "outputs/exp/checkpoints/last.ckpt", "--epochs", "20", "--lr", "0.0003",
        "--device", "cpu", "--no-augment", "--amp", "--run-name", "exp 1",
    ]  # fmt: skip
    reordered = dict(reversed(list(values.items())))
    assert build(catalog, command="train", values=reordered).command == response.command


def test_defaults_and_empty_values_are_left_out(catalog: Catalog) -> None:
    values = {
        "data": "datasets", "epochs": 10, "lr": "0.001", "batch_size": "16", "device": "cuda",
        "augment": True, "amp": False, "run_name": "", "checkpoint": None,
    }  # fmt: skip
    argv = build(catalog, command="train", values=values).argv
    assert argv == ["python", "train.py", "--data", "data/datasets"]


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        pytest.param({"epochs": "abc"}, "values.epochs: expected int >= 1 and <= 1000, got 'abc'",
                     id="not-an-int"),
        pytest.param({"epochs": 0}, "values.epochs: expected int >= 1", id="below-min"),
        pytest.param({"epochs": 2.5}, "values.epochs: expected int", id="fraction"),
        pytest.param({"epochs": True}, "values.epochs: expected int", id="bool-for-int"),
        pytest.param({"lr": "fast"}, "values.lr: expected float >= 0 and <= 1", id="not-a-float"),
        pytest.param({"lr": "nan"}, "values.lr: expected float", id="nan"),
        pytest.param({"lr": 1e400}, "values.lr: expected float", id="inf"),
        pytest.param({"device": "tpu"}, "values.device: expected one of 'cuda', 'cpu'",
                     id="bad-choice"),
        pytest.param({"amp": "maybe"}, "values.amp: expected true or false", id="bad-bool"),
        pytest.param({"run_name": 3}, "values.run_name: expected a string", id="number-for-str"),
        pytest.param({"data": "a\x00b"}, "values.data: NUL bytes", id="nul-in-path"),
        pytest.param({"epoch": 3}, "values.epoch: not an option of 'train'", id="unknown"),
        pytest.param({"data": ""}, "values.data: required", id="missing-required"),
    ],
)  # fmt: skip
def test_bad_values_name_the_option(catalog: Catalog, values: dict[str, Any], detail: str) -> None:
    with pytest.raises(errors.InvalidParams) as raised:
        build(catalog, command="train", values={"data": "datasets", **values})
    assert raised.value.detail.startswith(detail), raised.value.detail


def test_run_params_value_is_validated_and_canonicalised(catalog: Catalog) -> None:
    values = {"pipeline": "preprocessing", "image": "x.png", "params": '{"blur": true}'}
    argv = build(catalog, values=values).argv
    assert argv[-2:] == ["--params", '{"blur":{"kernelSize":5}}']
    with pytest.raises(errors.InvalidParams, match=r"values.params: .*\$\.params\.blur"):
        build(catalog, values={**values, "params": '{"blur": {"kernelSize": 40}}'})
    with pytest.raises(errors.InvalidParams, match=r"values\.params is not JSON"):
        build(catalog, values={**values, "params": "{blur"})


# --- shell safety --------------------------------------------------------------------------

INJECTIONS = [
    "; rm -rf /",
    "$(reboot)",
    "`reboot`",
    "a && b || c | d > /tmp/x < /etc/passwd &",
    'it\'s "quoted" \\ back',
    "line one\nline two\r\n",
    "tab\there $HOME ${PATH} ~ * ? [a] {b,c} !",
    "--epochs=999",
    "-",
    "' ; echo pwned ; '",
    "ünïcødé 💥",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_attempts_stay_one_literal_argument(catalog: Catalog, payload: str) -> None:
    response = build(catalog, command="train", values={"data": "d", "run_name": payload})
    last = response.argv[-2:] if response.argv[-2] == "--run-name" else response.argv[-1:]
    assert "".join(last).removeprefix("--run-name").removeprefix("=") == payload
    if payload.startswith("-"):
        assert last == [f"--run-name={payload}"]
        assert any("starts with '-'" in w for w in response.warnings)
    # A real shell sees exactly the argv: no expansion, no extra words, no commands run.
    script = 'for a in "$@"; do printf "%s\\0" "$a"; done'
    shell = subprocess.run(
        ["sh", "-c", f"set -- {response.command}; {script}"],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    assert shell.stdout.decode().split("\0")[:-1] == response.argv


# --- catalog files --------------------------------------------------------------------------

GOOD_OPTION = 'name = "n"\nflag = "--n"\n'


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        pytest.param("[[commands]\n", "not valid TOML", id="not-toml"),
        pytest.param('[[commands]]\nid = "x"\n', "commands[0]: Object missing required field "
                     "`program`", id="missing-program"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\ncolour = 1\n',
                     "commands[0]: Object contains unknown field `colour`", id="unknown-key"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     'name = "n"\nflag = 3\n', "commands[0].options[0].flag: Expected `str`",
                     id="wrong-type"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     'name = "n"\nflag = "n; rm"\n', "commands[0].options[0].flag", id="bad-flag"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     + GOOD_OPTION + 'type = "choice"\n', "commands[0].options[0].choices",
                     id="choice-without-choices"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     + GOOD_OPTION + 'type = "int"\ndefault = "many"\n',
                     "commands[0].options[0].default: expected int", id="bad-default"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     + GOOD_OPTION + 'type = "bool"\ndefault = true\n',
                     "commands[0].options[0].false_flag", id="true-bool-without-false-flag"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p"\n[[commands.options]]\n'
                     + GOOD_OPTION + "[[commands.options]]\n" + GOOD_OPTION,
                     "commands[0].options[1]: option 'n'", id="repeated-option"),
        pytest.param('[[commands]]\nid = "x"\nprogram = "p \'unclosed"\n',
                     "commands[0].program: No closing quotation", id="bad-program"),
        pytest.param('[[commands]]\nid = "playground-rt run"\nprogram = "p"\n',
                     "command 'playground-rt run' is already defined", id="duplicate-id"),
    ],
)  # fmt: skip
def test_bad_catalog_names_file_and_key(tmp_path: Path, text: str, detail: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as raised:
        Catalog.load(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert detail in str(raised.value)


def test_missing_catalog_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the catalog"):
        Catalog.load(tmp_path / "absent.toml")


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("commands"), commands_catalog=EXAMPLE_CATALOG)
    async with running(settings) as server:
        yield server


async def test_api_lists_the_user_catalog(catalog_server: Server) -> None:
    response = await catalog_server.http.get("/api/commands")
    assert response.status_code == 200
    ids = [c["id"] for c in response.json()["commands"]]
    assert ids == [RUN_COMMAND, "train", "export"]


async def test_api_builds_and_answers_422_naming_the_option(catalog_server: Server) -> None:
    ok = await catalog_server.post(
        "/api/commands/build", {"command": "train", "values": {"data": "x", "epochs": "5"}}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["argv"][-2:] == ["--epochs", "5"]
    bad = await catalog_server.post(
        "/api/commands/build", {"command": "train", "values": {"data": "x", "epochs": "abc"}}
    )
    assert bad.status_code == 422
    assert bad.json() == {
        "detail": "values.epochs: expected int >= 1 and <= 1000, got 'abc'",
        "code": "invalid_params",
    }
    unknown = await catalog_server.post("/api/commands/build", {"command": "deploy"})
    assert unknown.status_code == 404
